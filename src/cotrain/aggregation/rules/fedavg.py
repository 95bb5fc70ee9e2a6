"""FedAvg's rule: the example-weighted mean (McMahan et al., AISTATS 2017).

x = sum_k n_k x_k / sum_k n_k over the uploads x_k (shape of each: the model's), computed in
float64 in upload order, so it equals :func:`cotrain.aggregation.weighted_mean` bit for bit.
"""

from __future__ import annotations

import torch

from cotrain.aggregation.base import Aggregator, Combined, RoundContext, register_aggregator


@register_aggregator("fedavg")
class FedAvg(Aggregator):
    """The weighted mean of the uploads; no scores, no exclusions."""

    on_updates = False  # the mean commutes with translation: no need to subtract the reference

    def combine(self, updates: torch.Tensor, weights: torch.Tensor, ids: list[str],
                context: RoundContext) -> Combined:
        total = float(weights.sum())
        acc = torch.zeros(updates.shape[1], dtype=torch.float64)
        for row, w in zip(updates, weights.tolist()):
            acc += row * (float(w) / total)
        return Combined(acc, weights={pid: float(w) / total for pid, w in zip(ids, weights.tolist())})
