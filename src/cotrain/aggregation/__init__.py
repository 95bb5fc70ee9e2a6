"""Aggregation rules below every protocol: typed uploads in, a typed aggregate out.

>>> from cotrain.aggregation import Upload, build_aggregator
>>> import torch
>>> agg = build_aggregator("fedavg")
>>> out = agg([Upload("a", {"w": torch.tensor([0.0])}, weight=1), Upload("b", {"w": torch.tensor([3.0])}, weight=2)])
>>> out.tensors["w"].item(), out.weights
(2.0, {'a': 0.3333333333333333, 'b': 0.6666666666666666})
"""

from cotrain.aggregation.base import (AGGREGATORS, Aggregator, Combined, RoundContext, available_aggregators,
                                      build_aggregator, flatten, register_aggregator, unflatten)
from cotrain.aggregation.mean import weighted_mean
from cotrain.aggregation.records import Aggregate, Upload

__all__ = [
    "AGGREGATORS", "Aggregator", "Combined", "RoundContext", "available_aggregators", "build_aggregator", "flatten",
    "register_aggregator", "unflatten", "weighted_mean", "Aggregate", "Upload",
]
