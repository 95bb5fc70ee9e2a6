"""Krum (Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent", NeurIPS 2017).

For uploads x_1..x_n (rows, shape (d,)) of which at most f are Byzantine, the score of i is the sum
of squared distances to its n - f - 2 nearest other uploads,
    score(i) = sum_{j in N_i} ||x_i - x_j||^2,   N_i = the n - f - 2 closest j != i,
and Krum outputs the upload with the least score (ties: the first in upload order). It needs
n - f - 2 >= 1, i.e. n >= f + 3 (the paper's guarantee needs n > 2f + 2). Weights are ignored.

ByzFL's ``Krum(f)`` averages the n - f - 1 nearest instead of summing the n - f - 2 nearest:
its ``Krum(f + 1)`` picks the same upload as this rule's ``krum(f)``.
"""

from __future__ import annotations

import torch

from cotrain.aggregation.base import Aggregator, Combined, RoundContext, register_aggregator
from cotrain.aggregation.rules._common import int_option, pairwise_sq_distances, require


def krum_scores(updates: torch.Tensor, f: int, rule: str = "krum") -> torch.Tensor:
    """(n,) Krum scores of the rows of ``updates`` (n, d) for at most ``f`` Byzantine rows."""
    n = updates.shape[0]
    k = n - f - 2
    require(k >= 1, f"{rule}: f={f} needs at least f + 3 = {f + 3} uploads, got {n}")
    dist = pairwise_sq_distances(updates)
    dist.fill_diagonal_(float("inf"))  # a row is not its own neighbour
    return dist.sort(dim=1).values[:, :k].sum(dim=1)


@register_aggregator("krum")
class Krum(Aggregator):
    """The one upload closest to its n - f - 2 neighbours; every other upload is excluded.

    Args:
        f: the number of Byzantine uploads to tolerate (>= 0).
    """

    on_updates = False  # distances do not change under translation

    def __init__(self, *, f: int = 1) -> None:
        self.f = int_option("krum", "f", f, minimum=0)

    def combine(self, updates: torch.Tensor, weights: torch.Tensor, ids: list[str],
                context: RoundContext) -> Combined:
        scores = krum_scores(updates, self.f)
        best = int(torch.argmin(scores))
        return Combined(updates[best].clone(), weights={ids[best]: 1.0},
                        scores={pid: float(s) for pid, s in zip(ids, scores)},
                        excluded=[pid for i, pid in enumerate(ids) if i != best])
