"""MNIST-M (Ganin & Lempitsky): ``mnist_m_test/*.png`` plus ``mnist_m_test_labels.txt``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cotrain.data.base import DatasetSplits
from cotrain.data.readers.common import images_to_tensor, make_splits, stratified_split, subsample
from cotrain.data.readers.imagefiles import load_image_files
from cotrain.data.registry import register_dataset
from cotrain.data.transforms import to_grayscale

IMAGE_DIR = "mnist_m_test"
LABELS = "mnist_m_test_labels.txt"


def read_labels(path: Path) -> tuple[list[str], np.ndarray]:
    """The ``<file name> <label>`` lines of an MNIST-M labels file -> (names, int64 labels)."""
    names, labels = [], []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{path}:{lineno}: expected '<file name> <label>', got {line!r}")
        names.append(parts[0])
        labels.append(int(parts[1]))
    return names, np.asarray(labels, dtype=np.int64)


def _sizes(root: Path) -> tuple[int, int]:
    _, labels = read_labels(root / LABELS)
    train, test = stratified_split(labels, 0.2, 0, "mnist_m")
    return len(train), len(test)


@register_dataset(
    "mnist_m",
    folder="mnist_m",
    files=(LABELS, IMAGE_DIR),
    how_to_get="put mnist_m_test/ and mnist_m_test_labels.txt in <data dir>/mnist_m",
    sizes=_sizes,
    description="MNIST-M digits (test split re-split 80/20), 3x32x32 RGB",
)
def load_mnist_m(
    root: Path,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    size: int | None = None,
    grayscale: bool = False,
    max_samples: int | None = None,
    cache: bool = True,
) -> DatasetSplits:
    """MNIST-M: x float32 (N, 3, 32, 32) in [0, 1], y int64 digit (10 classes).

    Only the original *test* split (9,001 images) is on disk, so it is split here, stratified by
    label and deterministically from ``seed``: ``test_fraction`` of each digit goes to test.
    ``size`` resizes (e.g. 28 to pair with MNIST), ``grayscale`` gives (N, 1, H, W);
    ``max_samples`` draws a deterministic subset before splitting (for quick runs). Decoded
    images are cached unless ``cache=False``.
    """
    names, labels = read_labels(root / LABELS)
    keep = subsample(len(names), max_samples, seed, "mnist_m")
    paths = [root / IMAGE_DIR / names[i] for i in keep]
    labels = labels[keep]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image files listed in {root / LABELS} are missing, e.g. {missing[0]}"
        )
    images = load_image_files("mnist_m", paths, size, cache=cache)
    x = images_to_tensor(images)
    if grayscale:
        x = to_grayscale(x)
    train, test = stratified_split(labels, test_fraction, seed, "mnist_m")
    return make_splits(
        "mnist_m", x, labels, train, test, num_classes=10, class_names=[str(d) for d in range(10)]
    )
