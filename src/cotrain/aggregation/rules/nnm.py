"""Nearest-neighbour mixing, a pre-aggregator (Allouah, Farhadkhani, Guerraoui, Gupta, Pinot,
Stephan, "Fixing by Mixing: A Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS 2023,
Algorithm 1).

Every upload x_i (row, shape (d,)) is replaced by the mean of its n - f nearest uploads in L2
distance, itself included: y_i = (1 / (n - f)) sum_{j in N_i} x_j (ties: upload order). The inner
rule then aggregates y_1..y_n under the same ids and weights, so its scores, weights and exclusions
are the participants' directly. Mixing pulls the honest rows together under heterogeneous data, so
a robust inner rule (Krum, the geometric median, the trimmed mean) loses less to non-IID-ness.
ByzFL's ``NNM(f)`` is the same map.
"""

from __future__ import annotations

from typing import Any

import torch

from cotrain.aggregation.base import Aggregator, Combined, RoundContext, register_aggregator
from cotrain.aggregation.rules._common import inner_rule, int_option, pairwise_sq_distances, require


@register_aggregator("nnm")
class NearestNeighbourMixing(Aggregator):
    """Replace each upload by the mean of its n - f nearest uploads, then aggregate with an inner rule.

    Args:
        f: the number of Byzantine uploads to tolerate (>= 0; a round needs n > f).
        rule: the inner rule's registered name.
        options: the inner rule's options.
    """

    def __init__(self, *, f: int = 1, rule: str = "trimmed_mean", options: dict[str, Any] | None = None) -> None:
        self.f = int_option("nnm", "f", f, minimum=0)
        self.inner = inner_rule("nnm", rule, options)
        self.needs_server_upload = self.inner.needs_server_upload  # type: ignore[misc]

    def mix(self, updates: torch.Tensor) -> torch.Tensor:
        """(n, d): row i the mean of the n - f rows nearest row i (row i itself at distance 0 first)."""
        n = updates.shape[0]
        require(n > self.f, f"nnm: f={self.f} needs more than {self.f} uploads, got {n}")
        dist = pairwise_sq_distances(updates)
        dist.fill_diagonal_(-1.0)  # a row is always its own nearest, even beside a duplicate
        nearest = torch.argsort(dist, dim=1, stable=True)[:, :n - self.f]
        return updates[nearest].mean(dim=1)

    def combine(self, updates: torch.Tensor, weights: torch.Tensor, ids: list[str],
                context: RoundContext) -> Combined:
        return self.inner.combine(self.mix(updates), weights, ids, context)
