"""dSprites (DeepMind) from an ``.npz`` with ``imgs``, ``latents_classes``, ``latents_values``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cotrain.data.base import DatasetSplits
from cotrain.data.readers.common import make_splits, stratified_split, subsample
from cotrain.data.registry import not_found, register_dataset

VARIANTS = {"subset": "dsprites_subset.npz", "grid": "dsprites_downsampled.npz"}
SHAPES = ["square", "ellipse", "heart"]
FACTORS = ("shape", "scale", "scale_large", "orientation", "pos_x", "pos_y")


def _read(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        for key in ("imgs", "latents_classes", "latents_values"):
            if key not in data.files:
                raise ValueError(f"{path}: missing array {key!r} (has {data.files})")
        imgs, classes, values = data["imgs"], data["latents_classes"], data["latents_values"]
    n = imgs.shape[0]
    if imgs.ndim != 3 or classes.shape != (n, 5) or values.shape != (n, 5):
        raise ValueError(
            f"{path}: expected imgs (N,64,64), latents (N,5); "
            f"got {imgs.shape}, {classes.shape}, {values.shape}"
        )
    return imgs, classes, values


def factor_labels(classes: np.ndarray, values: np.ndarray, bins: int) -> dict[str, np.ndarray]:
    """Integer factors per sample from latents (N, 5) (shape, scale, orientation, posX, posY).

    ``orientation`` (values in [0, 2 pi]) and ``pos_x``/``pos_y`` (values in [0, 1]) are cut into
    ``bins`` equal-width bins; ``scale_large`` is 1 where the scale index is >= 3.
    """
    def binned(v: np.ndarray, top: float) -> np.ndarray:
        return np.clip(np.floor(v / top * bins), 0, bins - 1).astype(np.int64)

    return {
        "shape": classes[:, 0].astype(np.int64),
        "scale": classes[:, 1].astype(np.int64),
        "scale_large": (classes[:, 1] >= 3).astype(np.int64),
        "orientation": binned(values[:, 2], 2 * math.pi),
        "pos_x": binned(values[:, 3], 1.0),
        "pos_y": binned(values[:, 4], 1.0),
    }


def _sizes(root: Path) -> tuple[int, int]:
    _, classes, _ = _read(root / VARIANTS["subset"])
    keep = subsample(len(classes), 20000, 0, "dsprites")
    train, test = stratified_split(classes[keep, 0], 0.2, 0, "dsprites")
    return len(train), len(test)


@register_dataset(
    "dsprites",
    folder="dsprites",
    files=(VARIANTS["subset"],),
    how_to_get="put dsprites_subset.npz (DeepMind keys) in <data dir>/dsprites",
    sizes=_sizes,
    description="dSprites shapes with ground-truth factors as attributes, 1x32x32",
)
def load_dsprites(
    root: Path,
    *,
    variant: str = "subset",
    task: str = "shape",
    size: int = 32,
    bins: int = 4,
    max_samples: int | None = 20000,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> DatasetSplits:
    """dSprites: x float32 (N, 1, size, size) in [0, 1], average-pooled from the 64x64 binary images.

    ``variant``: ``"subset"`` (20,000 random images) or ``"grid"`` (46,080, factorial grid).
    ``task`` picks the label among shape (3, default), scale (6), scale_large (2), orientation,
    pos_x, pos_y (``bins`` bins each); the other factors are attributes (int64 (N,)), except the
    scale factor paired with a scale task. ``max_samples`` draws a
    deterministic subset; the split is stratified by label with ``test_fraction``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown dsprites variant {variant!r}; known: {', '.join(VARIANTS)}")
    if task not in FACTORS:
        raise ValueError(f"unknown dsprites task {task!r}; known: {', '.join(FACTORS)}")
    if not 1 <= size <= 64:
        raise ValueError(f"size must be in 1..64, got {size}")
    path = root / VARIANTS[variant]
    if not path.is_file():
        raise not_found(path, f"dsprites variant {variant!r}")
    imgs, classes, values = _read(path)
    keep = subsample(len(imgs), max_samples, seed, "dsprites")
    x = torch.from_numpy(np.ascontiguousarray(imgs[keep], dtype=np.float32)[:, None])
    x = x.clamp_(0.0, 1.0)
    if size != x.shape[-1]:
        x = F.adaptive_avg_pool2d(x, size)
    factors = factor_labels(classes[keep], values[keep], bins)
    y = factors.pop(task)
    if task in ("scale", "scale_large"):  # the other scale factor would give the label away
        factors.pop("scale_large" if task == "scale" else "scale")
    train, test = stratified_split(y, test_fraction, seed, "dsprites")
    return make_splits(
        "dsprites", x, y, train, test, attributes=factors,
        num_classes={"shape": 3, "scale": 6, "scale_large": 2}.get(task, bins),
        class_names=SHAPES if task == "shape" else None,
        attribute_values={"shape": SHAPES} if task != "shape" else None,
    )
