"""Coordinate-wise trimmed mean (Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed
Learning: Towards Optimal Statistical Rates", ICML 2018, Definition 2).

For uploads x_1..x_n (rows of the (n, d) matrix) and b = floor(beta * n) values trimmed per side:
for every coordinate j, sort x_{1,j}..x_{n,j}, drop the b smallest and the b largest and average
the n - 2b left: x_j = (1 / (n - 2b)) sum_{r=b+1}^{n-b} x_{(r),j}. Weights are ignored (the paper's
rule is unweighted); beta = 0 is the plain mean. ByzFL's ``TrMean(f)`` is this rule with b = f.

The trimming acts per coordinate, so no participant is left out as a whole: ``excluded`` is always
empty. Each participant's score is the share of its d coordinates that were trimmed (a value
tied across participants is trimmed in upload order, a stable sort), a diagnostic for the report.
"""

from __future__ import annotations

import math

import torch

from cotrain.aggregation.base import Aggregator, Combined, RoundContext, register_aggregator
from cotrain.aggregation.rules._common import float_option, require


@register_aggregator("trimmed_mean")
class TrimmedMean(Aggregator):
    """Average each coordinate after dropping its ``floor(beta * n)`` smallest and largest values.

    Args:
        beta: the fraction trimmed from each side, 0 <= beta < 0.5 (a round needs n > 2 floor(beta n)).
    """

    on_updates = False  # commutes with translation

    def __init__(self, *, beta: float = 0.1) -> None:
        self.beta = float_option("trimmed_mean", "beta", beta, low=0.0, high=0.5, high_open=True)

    def trimmed_per_side(self, n: int) -> int:
        # the 1e-9 keeps 0.3 * 10 = 3.0000000000000004 and 0.29 * 100 = 28.999999999999996 honest
        return int(math.floor(self.beta * n + 1e-9))

    def combine(self, updates: torch.Tensor, weights: torch.Tensor, ids: list[str],
                context: RoundContext) -> Combined:
        n, d = updates.shape
        b = self.trimmed_per_side(n)
        require(n - 2 * b >= 1, f"trimmed_mean: beta={self.beta} trims {b} of {n} uploads per side; nothing is left")
        ordered, order = updates.sort(dim=0, stable=True)
        vector = ordered[b:n - b].mean(dim=0)
        trimmed = torch.zeros(n, dtype=torch.float64)
        if b and d:
            cut = torch.cat([order[:b], order[n - b:]]).reshape(-1)
            trimmed = torch.bincount(cut, minlength=n).to(torch.float64) / d
        return Combined(vector, scores={pid: float(s) for pid, s in zip(ids, trimmed)},
                        info={"trimmed_per_side": float(b)})
