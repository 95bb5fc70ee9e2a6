"""Coordinate-wise median (Yin et al., "Byzantine-Robust Distributed Learning", ICML 2018).

x_j = median_k x_{k,j} for every coordinate j; weights are ignored. With an even count torch's
median takes the lower of the two middle values.
"""

from __future__ import annotations

import torch

from cotrain.aggregation.base import Aggregator, Combined, RoundContext, register_aggregator


@register_aggregator("median")
class CoordinateMedian(Aggregator):
    """The median of each coordinate across uploads."""

    on_updates = False  # the median commutes with translation

    def combine(self, updates: torch.Tensor, weights: torch.Tensor, ids: list[str],
                context: RoundContext) -> Combined:
        return Combined(updates.median(dim=0).values)
