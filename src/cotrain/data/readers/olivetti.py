"""Olivetti (AT&T/ORL) faces from Roweis' ``olivettifaces.mat`` (variable ``faces``, 4096 x 400)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from cotrain.data.base import DatasetSplits
from cotrain.data.readers.common import images_to_tensor, make_splits, stratified_split
from cotrain.data.registry import register_dataset

FILE = "olivettifaces.mat"
IMAGES_PER_PERSON = 10


def read_faces(path: Path) -> np.ndarray:
    """The ``faces`` matrix (4096, N), column-major 64x64 images -> uint8 (N, 64, 64)."""
    mat = scipy.io.loadmat(path)
    if "faces" not in mat:
        raise ValueError(f"{path}: no variable 'faces' (has {[k for k in mat if not k.startswith('__')]})")
    faces = np.asarray(mat["faces"])
    if faces.ndim != 2 or faces.shape[0] != 64 * 64:
        raise ValueError(f"{path}: 'faces' has shape {faces.shape}, expected (4096, N)")
    images = faces.T.reshape(-1, 64, 64).transpose(0, 2, 1)
    if images.dtype != np.uint8:
        images = np.clip(images, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(images)


def _sizes(root: Path) -> tuple[int, int]:
    y = np.arange(len(read_faces(root / FILE))) // IMAGES_PER_PERSON
    train, test = stratified_split(y, 0.2, 0, "olivetti")
    return len(train), len(test)


@register_dataset(
    "olivetti",
    folder="olivetti_faces",
    files=(FILE,),
    how_to_get="put olivettifaces.mat in <data dir>/olivetti_faces",
    sizes=_sizes,
    description="Olivetti faces, 40 people x 10, 1x64x64 gray, label = identity",
)
def load_olivetti(root: Path, *, test_fraction: float = 0.2, seed: int = 0) -> DatasetSplits:
    """Olivetti: x float32 (N, 1, 64, 64) in [0, 1], y int64 identity (40 classes,
    person = column // 10). Split per person: ``test_fraction`` of each person's 10 images
    (2 by default) go to test, chosen deterministically from ``seed``; 320/80 by default.
    """
    images = read_faces(root / FILE)
    y = np.arange(len(images)) // IMAGES_PER_PERSON
    train, test = stratified_split(y, test_fraction, seed, "olivetti")
    return make_splits("olivetti", images_to_tensor(images), y, train, test)
