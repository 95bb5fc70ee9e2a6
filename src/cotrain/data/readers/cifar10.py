"""CIFAR-10 as class-folder image files: ``<split>/<class>/*.jpg`` (or ``.png``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cotrain.data.base import ArrayDataset, DatasetSplits
from cotrain.data.readers.common import images_to_tensor, long_tensor, subsample
from cotrain.data.readers.imagefiles import load_image_files
from cotrain.data.registry import not_found, register_dataset

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_DIRS = ("train", "train_subset")
SUFFIXES = (".jpg", ".jpeg", ".png")


def train_dir(root: Path) -> Path:
    """``root/train`` when present (full set), else ``root/train_subset``."""
    for name in TRAIN_DIRS:
        if (root / name).is_dir():
            return root / name
    raise not_found(root / TRAIN_DIRS[0], "CIFAR-10 train folder (train/ or train_subset/)")


def scan_split(split_dir: Path) -> tuple[list[Path], np.ndarray]:
    """Sorted image files under ``split_dir/<class>/`` and their labels (N,), class order =
    the standard CIFAR-10 order (= alphabetical folder order)."""
    if not split_dir.is_dir():
        raise not_found(split_dir, "CIFAR-10 split folder")
    unknown = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and d.name not in CLASSES)
    if unknown:
        raise ValueError(f"{split_dir}: unexpected class folders {unknown}; expected {CLASSES}")
    paths, labels = [], []
    for label, cls in enumerate(CLASSES):
        files = sorted(p for p in (split_dir / cls).glob("*") if p.suffix.lower() in SUFFIXES)
        paths.extend(files)
        labels.extend([label] * len(files))
    if not paths:
        raise not_found(split_dir / "<class>" / "*.jpg", "CIFAR-10 images")
    return paths, np.asarray(labels, dtype=np.int64)


def _sizes(root: Path) -> tuple[int, int]:
    return len(scan_split(train_dir(root))[0]), len(scan_split(root / "test")[0])


def _load_split(
    split_dir: Path, size: int, max_samples: int | None, seed: int, cache: bool
) -> ArrayDataset:
    paths, labels = scan_split(split_dir)
    keep = subsample(len(paths), max_samples, seed, "cifar10", split_dir.name)
    paths = [paths[i] for i in keep]
    images = load_image_files("cifar10", paths, size, cache=cache)
    return ArrayDataset(
        x=images_to_tensor(images), y=long_tensor(labels[keep]), name="cifar10",
        num_classes=10, class_names=list(CLASSES),
    )


@register_dataset(
    "cifar10",
    folder="cifar10_jpg",
    files=("test",),
    how_to_get="put class folders test/<class>/*.jpg and train_subset/ (or train/) in <data dir>/cifar10_jpg",
    sizes=_sizes,
    description="CIFAR-10 (JPEG q75 re-encode), 3x32x32",
)
def load_cifar10(
    root: Path,
    *,
    size: int = 32,
    max_samples: int | None = None,
    seed: int = 0,
    cache: bool = True,
) -> DatasetSplits:
    """CIFAR-10: x float32 (N, 3, size, size) in [0, 1], y int64 (10 classes, standard order).

    Train comes from ``train/`` when present, else ``train_subset/``; test from ``test/``.
    ``max_samples`` keeps a deterministic subset of each split. Decoded images are cached unless
    ``cache=False``. The shared copy is a lossy JPEG re-encode: not for pixel-exact claims.
    """
    return DatasetSplits(
        train=_load_split(train_dir(root), size, max_samples, seed, cache),
        test=_load_split(root / "test", size, max_samples, seed, cache),
    )
