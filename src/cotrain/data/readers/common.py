"""Helpers shared by the readers: deterministic splits and array-to-tensor conversion."""

from __future__ import annotations

import numpy as np
import torch

from cotrain.data.base import ArrayDataset, DatasetSplits
from cotrain.seeding import numpy_rng


def check_fraction(test_fraction: float) -> None:
    """Raise ``ValueError`` unless ``0 < test_fraction < 1``."""
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int, *stream: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices 0..N-1 into (train, test), per class ``round(test_fraction * count)`` to test.

    Deterministic in ``seed`` and the stream names. Both index arrays are sorted, int64.
    Every class with at least two samples keeps at least one on each side.
    """
    check_fraction(test_fraction)
    labels = np.asarray(labels)
    rng = numpy_rng(seed, "split", *stream)
    test_parts = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(round(test_fraction * len(idx)))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        test_parts.append(rng.permutation(idx)[:k])
    test = np.sort(np.concatenate(test_parts)) if test_parts else np.zeros(0, np.int64)
    mask = np.ones(len(labels), bool)
    mask[test] = False
    return np.flatnonzero(mask).astype(np.int64), test.astype(np.int64)


def subsample(n: int, max_samples: int | None, seed: int, *stream: str) -> np.ndarray:
    """Sorted indices of a deterministic random subset of size ``min(n, max_samples)``
    (all of 0..n-1 when ``max_samples`` is None)."""
    if max_samples is None or max_samples >= n:
        return np.arange(n, dtype=np.int64)
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    rng = numpy_rng(seed, "subsample", *stream)
    return np.sort(rng.choice(n, size=max_samples, replace=False)).astype(np.int64)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) images -> float32 tensor (N, C, H, W) in [0, 1]."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[:, None, :, :]
    elif arr.ndim == 4:
        arr = arr.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"expected (N,H,W) or (N,H,W,C) images, got shape {arr.shape}")
    out = arr.astype(np.float32, order="C")  # always a fresh, writable copy
    if arr.dtype == np.uint8:
        out /= 255.0
    return torch.from_numpy(out)


def long_tensor(values: np.ndarray) -> torch.Tensor:
    """Any integer array -> int64 tensor (N,)."""
    return torch.from_numpy(np.asarray(values, dtype=np.int64).copy())


def make_splits(
    name: str,
    x: torch.Tensor,
    y: np.ndarray,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    *,
    attributes: dict[str, np.ndarray] | None = None,
    num_classes: int = 0,
    class_names: list[str] | None = None,
    attribute_values: dict[str, list[str]] | None = None,
) -> DatasetSplits:
    """Build a :class:`DatasetSplits` from one pool of samples and two index arrays.

    ``x`` has shape (N, ...), ``y`` and each attribute shape (N,).
    """
    full = ArrayDataset(
        x=x,
        y=long_tensor(y),
        attributes={k: long_tensor(v) for k, v in (attributes or {}).items()},
        name=name,
        num_classes=num_classes,
        class_names=class_names,
        attribute_values=dict(attribute_values or {}),
    )
    return DatasetSplits(train=full.subset(train_idx), test=full.subset(test_idx))
