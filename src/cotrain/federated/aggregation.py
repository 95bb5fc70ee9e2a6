"""Aggregation rules: ``register_aggregator("fedavg")`` and :func:`get_aggregator`.

A rule maps the participants' uploaded tensors and their weights to one set of tensors.
Robust rules (median, credit-score weighting, ...) register here too.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

Tensors = Mapping[str, torch.Tensor]
Aggregator = Callable[[Sequence[Tensors], Sequence[float]], dict[str, torch.Tensor]]
_AGGREGATORS: dict[str, Aggregator] = {}


def register_aggregator(name: str) -> Callable[[Aggregator], Aggregator]:
    def add(fn: Aggregator) -> Aggregator:
        if name in _AGGREGATORS:
            raise ValueError(f"aggregator {name!r} is already registered")
        _AGGREGATORS[name] = fn
        return fn

    return add


def get_aggregator(name: str) -> Aggregator:
    if name not in _AGGREGATORS:
        raise ValueError(f"unknown aggregator {name!r}; available: {', '.join(sorted(_AGGREGATORS))}")
    return _AGGREGATORS[name]


def available_aggregators() -> list[str]:
    return sorted(_AGGREGATORS)


def _check(uploads: Sequence[Tensors], weights: Sequence[float]) -> None:
    if len(uploads) == 0:
        raise ValueError("nothing to aggregate: no uploads")
    if len(uploads) != len(weights):
        raise ValueError(f"{len(uploads)} uploads but {len(weights)} weights")
    names = set(uploads[0])
    for u in uploads[1:]:
        if set(u) != names:
            raise ValueError("uploads carry different tensor names")


@register_aggregator("fedavg")
def weighted_mean(uploads: Sequence[Tensors], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """sum_k w_k x_k / sum_k w_k (McMahan et al., 2017), in float64 then cast back.

    Integer tensors (e.g. BatchNorm's batch counter) take the first upload's value.
    """
    _check(uploads, weights)
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("aggregation weights must sum to a positive number")
    out: dict[str, torch.Tensor] = {}
    for name, first in uploads[0].items():
        if not first.is_floating_point():
            out[name] = first.clone()
            continue
        acc = torch.zeros_like(first, dtype=torch.float64)
        for u, w in zip(uploads, weights):
            acc += u[name].to(torch.float64) * (float(w) / total)
        out[name] = acc.to(first.dtype)
    return out


@register_aggregator("median")
def coordinate_median(uploads: Sequence[Tensors], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Coordinate-wise median (Yin et al., 2018); weights are ignored."""
    _check(uploads, weights)
    return {name: (torch.stack([u[name] for u in uploads]).median(dim=0).values
                   if first.is_floating_point() else first.clone())
            for name, first in uploads[0].items()}
