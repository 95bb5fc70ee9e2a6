"""FLTrust (Cao, Fang, Liu, Gong, "FLTrust: Byzantine-robust Federated Learning via Trust
Bootstrapping", NDSS 2021, Eqs. (2)-(4)).

The server trains too, on a small clean root set (the paper: 100 samples), from the same global
state with the participants' local settings; its update g_0 (shape (d,)) bootstraps trust. For the
participants' updates g_1..g_n (rows):
    TS_i = ReLU(cos(g_i, g_0))                     (trust score; 0 when g_i or g_0 is zero)
    g'_i = (||g_0|| / ||g_i||) g_i                 (every update rescaled to the server's magnitude)
    g    = sum_i TS_i g'_i / sum_j TS_j.
When every TS_i is 0 the aggregate is the zero update (the global model stays). Weights are ignored.

Scores: TS_i. Weights: TS_i / sum_j TS_j. Excluded: the participants with TS_i = 0.
The server must pass ``server_upload`` (``needs_server_upload``); the rule works on updates, so
the reference is subtracted from it as from every upload.
"""

from __future__ import annotations

import torch

from cotrain.aggregation.base import Aggregator, Combined, RoundContext, register_aggregator
from cotrain.aggregation.rules._common import require


@register_aggregator("fltrust")
class FLTrust(Aggregator):
    """Trust-weighted, magnitude-normalised mean against the server's own root-set update."""

    needs_server_upload = True
    methods = ("fedavg", "split")  # the server upload comes from the root participant (FedAvg) or root agent (SplitFed)

    def combine(self, updates: torch.Tensor, weights: torch.Tensor, ids: list[str],
                context: RoundContext) -> Combined:
        require(context.server_row is not None,
                "fltrust needs the server's own update on its root set: pass server_upload to the aggregator")
        g0 = context.server_row
        assert g0 is not None
        norm0 = torch.linalg.vector_norm(g0)
        norms = torch.linalg.vector_norm(updates, dim=1)
        tiny = torch.finfo(torch.float64).tiny
        cos = (updates @ g0) / (norms * norm0).clamp_min(tiny)
        trust = torch.where((norms > 0) & (norm0 > 0), cos.clamp_min(0.0), torch.zeros_like(cos))
        total = float(trust.sum())
        if total > 0:
            scaled = updates * (norm0 / norms.clamp_min(tiny))[:, None]
            vector = (trust @ scaled) / total
            share = trust / total
        else:
            vector, share = torch.zeros(updates.shape[1], dtype=torch.float64), torch.zeros_like(trust)
        return Combined(vector, weights={pid: float(w) for pid, w in zip(ids, share)},
                        scores={pid: float(t) for pid, t in zip(ids, trust)},
                        excluded=[pid for pid, t in zip(ids, trust.tolist()) if t == 0.0],
                        info={"server_norm": float(norm0)})
