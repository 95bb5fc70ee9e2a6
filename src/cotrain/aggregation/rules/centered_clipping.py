"""Centered clipping (Karimireddy, He, Jaggi, "Learning from History for Byzantine Robust
Optimization", ICML 2021, Eq. (2)).

Starting from the previous round's aggregate v_0 (the server's momentum; zero in the first round)
and for uploads x_1..x_n (rows, shape (d,)), ``iters`` = L steps of
    v_{l+1} = v_l + (1/n) sum_i (x_i - v_l) * min(1, tau / ||x_i - v_l||),
output v_L and keep it as the next round's start. The rule works on updates (x_i = upload minus the
global state), so v is an update too and the memory is an update-space momentum. Weights are
ignored, as in the paper and ByzFL's ``CenteredClipping(tau, L)`` (same iteration, same memory).

Scores: each update's distance to v_L. ``info["clipped"]``: how many were clipped in the last step.
Nobody is excluded. The rule keeps state: build one per run.
"""

from __future__ import annotations

import torch

from cotrain.aggregation.base import Aggregator, Combined, RoundContext, register_aggregator
from cotrain.aggregation.rules._common import float_option, int_option, require


@register_aggregator("centered_clipping")
class CenteredClipping(Aggregator):
    """Clip every update to radius tau around a centre that starts at the last aggregate.

    Args:
        tau: the clipping radius (> 0), in the units of the updates (an L2 norm).
        iters: the clipping steps L per round (>= 1).
    """

    def __init__(self, *, tau: float = 10.0, iters: int = 1) -> None:
        self.tau = float_option("centered_clipping", "tau", tau, low=0.0, low_open=True)
        self.iters = int_option("centered_clipping", "iters", iters, minimum=1)
        self.center: torch.Tensor | None = None  # v after the last round

    def combine(self, updates: torch.Tensor, weights: torch.Tensor, ids: list[str],
                context: RoundContext) -> Combined:
        d = updates.shape[1]
        if self.center is not None:
            require(self.center.shape[0] == d, f"centered_clipping: updates have {d} values, "
                                              f"the kept centre {self.center.shape[0]}; build one rule per run")
        v = torch.zeros(d, dtype=torch.float64) if self.center is None else self.center.clone()
        clipped = 0
        for _ in range(self.iters):
            diff = updates - v
            norm = torch.linalg.vector_norm(diff, dim=1)
            factor = torch.where(norm > self.tau, self.tau / norm.clamp_min(torch.finfo(norm.dtype).tiny),
                                 torch.ones_like(norm))
            clipped = int((norm > self.tau).sum())
            v = v + (diff * factor[:, None]).mean(dim=0)
        self.center = v.clone()
        distance = torch.linalg.vector_norm(updates - v, dim=1)
        return Combined(v, scores={pid: float(s) for pid, s in zip(ids, distance)},
                        info={"clipped": float(clipped)})
