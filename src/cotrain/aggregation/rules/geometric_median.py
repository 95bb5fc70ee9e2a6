"""Geometric median by the smoothed Weiszfeld algorithm (Pillutla, Kakade, Harchaoui, "Robust
Aggregation for Federated Learning", IEEE Trans. Signal Processing 2022: RFA, Algorithm 2).

The geometric median of uploads x_1..x_n (rows, shape (d,)) with weights a_i (a_i = n_i / sum n
with ``weighted``, else 1/n) minimises g(z) = sum_i a_i ||z - x_i||. Weiszfeld's fixed point with
RFA's smoothing nu (``eps``), started at the weighted mean z_0 = sum_i a_i x_i:
    b_i = a_i / max(eps, ||z_t - x_i||),   z_{t+1} = sum_i b_i x_i / sum_i b_i,
stopped after ``max_iter`` steps or when |g(z_t) - g(z_{t+1})| <= tol * g(z_{t+1}).
ByzFL's ``GeometricMedian(nu, T)`` is the same iteration from z_0 = 0 with a_i = 1/n for T steps:
both reach the same point when run to convergence.

Scores: each upload's distance to the median. Weights: the last step's b_i / sum_j b_j (the median
is that combination of the uploads). Nobody is excluded.
"""

from __future__ import annotations

import torch

from cotrain.aggregation.base import Aggregator, Combined, RoundContext, register_aggregator
from cotrain.aggregation.rules._common import bool_option, float_option, int_option


@register_aggregator("geometric_median")
class GeometricMedian(Aggregator):
    """RFA's smoothed Weiszfeld geometric median.

    Args:
        eps: the smoothing nu > 0 (a distance below it counts as eps: no division by zero).
        max_iter: the most Weiszfeld steps (>= 1).
        tol: stop when the objective's relative decrease is at most this (>= 0; 0 runs max_iter).
        weighted: weigh uploads by their example counts (RFA); False weighs them equally.
    """

    on_updates = False  # commutes with translation

    def __init__(self, *, eps: float = 1e-6, max_iter: int = 100, tol: float = 1e-6, weighted: bool = True) -> None:
        self.eps = float_option("geometric_median", "eps", eps, low=0.0, low_open=True)
        self.max_iter = int_option("geometric_median", "max_iter", max_iter, minimum=1)
        self.tol = float_option("geometric_median", "tol", tol, low=0.0)
        self.weighted = bool_option("geometric_median", "weighted", weighted)

    def combine(self, updates: torch.Tensor, weights: torch.Tensor, ids: list[str],
                context: RoundContext) -> Combined:
        a = weights if self.weighted else torch.ones_like(weights)
        a = a / a.sum()
        z = a @ updates
        objective = float(a @ torch.linalg.vector_norm(updates - z, dim=1))
        steps = 0
        b = a
        for steps in range(1, self.max_iter + 1):
            b = a / torch.linalg.vector_norm(updates - z, dim=1).clamp_min(self.eps)
            z = (b @ updates) / b.sum()
            previous, objective = objective, float(a @ torch.linalg.vector_norm(updates - z, dim=1))
            if abs(previous - objective) <= self.tol * objective:
                break
        distance = torch.linalg.vector_norm(updates - z, dim=1)
        share = b / b.sum()
        return Combined(z, weights={pid: float(w) for pid, w in zip(ids, share)},
                        scores={pid: float(s) for pid, s in zip(ids, distance)},
                        info={"iterations": float(steps), "objective": objective})
