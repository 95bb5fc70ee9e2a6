"""The mean of the uploads, under the name the robust-aggregation benchmark uses for FedAvg.

``mean`` (``weighted = True``, the default) is FedAvg's example-weighted mean (McMahan et al.,
AISTATS 2017), x = sum_k n_k x_k / sum_k n_k, bit for bit the ``fedavg`` rule; ``weighted = False``
is the plain average x = (1/n) sum_k x_k, ByzFL's ``Average``. Each x_k has the model's shape.
"""

from __future__ import annotations

import torch

from cotrain.aggregation.base import Combined, RoundContext, register_aggregator
from cotrain.aggregation.rules._common import bool_option
from cotrain.aggregation.rules.fedavg import FedAvg


@register_aggregator("mean")
class Mean(FedAvg):
    """The (example-weighted, by default) mean; no scores, no exclusions.

    Args:
        weighted: weigh each upload by its ``Upload.weight`` (the example count) as FedAvg does;
            False gives every upload the same weight.
    """

    def __init__(self, *, weighted: bool = True) -> None:
        self.weighted = bool_option("mean", "weighted", weighted)

    def combine(self, updates: torch.Tensor, weights: torch.Tensor, ids: list[str],
                context: RoundContext) -> Combined:
        return super().combine(updates, weights if self.weighted else torch.ones_like(weights), ids, context)
