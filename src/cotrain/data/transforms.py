"""Image-batch transforms that help pair data sets (e.g. MNIST with MNIST-M or USPS)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F

from cotrain.data.base import ArrayDataset, DatasetSplits

_LUMA = (0.299, 0.587, 0.114)


def _check_images(x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(x.shape)}")


def resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (N, C, H, W) -> (N, C, size, size); antialiased when shrinking.

    The filter weights are non-negative, so values stay within the input's range.
    """
    _check_images(x)
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == hw:
        return x
    shrinking = hw[0] < x.shape[-2] or hw[1] < x.shape[-1]
    out = F.interpolate(x.float(), size=hw, mode="bilinear", align_corners=False, antialias=shrinking)
    return out


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) -> (N, 3, H, W) by repeating the gray channel; 3-channel input is returned."""
    _check_images(x)
    if x.shape[1] == 3:
        return x
    if x.shape[1] != 1:
        raise ValueError(f"to_rgb expects 1 or 3 channels, got {x.shape[1]}")
    return x.repeat(1, 3, 1, 1)


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) by ITU-R 601 luma; 1-channel input is returned."""
    _check_images(x)
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"to_grayscale expects 1 or 3 channels, got {x.shape[1]}")
    w = torch.tensor(_LUMA, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def map_images(
    data: ArrayDataset | DatasetSplits, fn: Callable[[torch.Tensor], torch.Tensor]
) -> ArrayDataset | DatasetSplits:
    """A copy of ``data`` with ``x`` replaced by ``fn(x)`` (labels and attributes shared).

    Example: ``map_images(load_dataset("mnist"), lambda x: to_rgb(resize(x, 32)))``.
    """
    if isinstance(data, DatasetSplits):
        return DatasetSplits(train=map_images(data.train, fn), test=map_images(data.test, fn))
    return dataclasses.replace(data, x=fn(data.x))
