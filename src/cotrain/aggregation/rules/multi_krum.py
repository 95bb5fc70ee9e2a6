"""Multi-Krum (Blanchard, El Mhamdi, Guerraoui, Stainer, NeurIPS 2017, Section 5).

With the Krum scores of :func:`cotrain.aggregation.rules.krum.krum_scores` (computed once on all
n uploads), keep the m uploads of least score and average them: x = (1/m) sum_{i in S} x_i,
|S| = m (ties: upload order). m = 1 is Krum; the default m = n - f is ByzFL's choice. Weights
are ignored, as in the paper.

ByzFL's ``MultiKrum(f)`` scores with n - f - 1 neighbours and keeps m = n - f: its
``MultiKrum(f + 1)`` equals this rule's ``multi_krum(f, m=n - f - 1)``.
"""

from __future__ import annotations

import torch

from cotrain.aggregation.base import Aggregator, Combined, RoundContext, register_aggregator
from cotrain.aggregation.rules._common import int_option, require
from cotrain.aggregation.rules.krum import krum_scores


@register_aggregator("multi_krum")
class MultiKrum(Aggregator):
    """The mean of the m uploads of least Krum score; the others are excluded.

    Args:
        f: the number of Byzantine uploads to tolerate (>= 0).
        m: how many uploads to keep (>= 1); None keeps n - f.
    """

    on_updates = False

    def __init__(self, *, f: int = 1, m: int | None = None) -> None:
        self.f = int_option("multi_krum", "f", f, minimum=0)
        self.m = None if m is None else int_option("multi_krum", "m", m, minimum=1)

    def combine(self, updates: torch.Tensor, weights: torch.Tensor, ids: list[str],
                context: RoundContext) -> Combined:
        n = updates.shape[0]
        scores = krum_scores(updates, self.f, "multi_krum")
        m = n - self.f if self.m is None else self.m
        require(m <= n, f"multi_krum: m={m} but only {n} uploads")
        keep = torch.argsort(scores, stable=True)[:m]
        chosen = set(keep.tolist())
        return Combined(updates[keep].mean(dim=0), weights={ids[i]: 1.0 / m for i in sorted(chosen)},
                        scores={pid: float(s) for pid, s in zip(ids, scores)},
                        excluded=[pid for i, pid in enumerate(ids) if i not in chosen])
