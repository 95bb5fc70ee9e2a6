"""The weighted mean: plain arithmetic that every protocol shares (FedAvg, FADA's mix, SplitFed)."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

Tensors = Mapping[str, torch.Tensor]


def weighted_mean(tensors: Sequence[Tensors], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """sum_k w_k x_k / sum_k w_k, in float64 then cast back to each tensor's dtype.

    Integer tensors (BatchNorm's batch counter) take the first set's value.
    """
    if len(tensors) == 0:
        raise ValueError("nothing to average")
    if len(tensors) != len(weights):
        raise ValueError(f"{len(tensors)} tensor sets but {len(weights)} weights")
    if any(float(w) < 0 for w in weights):
        raise ValueError(f"weights must be >= 0, got {list(weights)}")
    total = float(sum(weights))
    if not total > 0:
        raise ValueError("weights must sum to a positive number")
    names = set(tensors[0])
    for t in tensors[1:]:
        if set(t) != names:
            raise ValueError("tensor sets carry different names")
    out: dict[str, torch.Tensor] = {}
    for name, first in tensors[0].items():
        if not first.is_floating_point():
            out[name] = first.clone()
            continue
        acc = torch.zeros_like(first, dtype=torch.float64)
        for t, w in zip(tensors, weights):
            acc += t[name].to(torch.float64) * (float(w) / total)
        out[name] = acc.to(first.dtype)
    return out
