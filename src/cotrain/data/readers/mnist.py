"""MNIST from the four original idx ``.gz`` files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from cotrain.data.base import ArrayDataset, DatasetSplits
from cotrain.data.readers.common import images_to_tensor, long_tensor
from cotrain.data.registry import register_dataset

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx_header(path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """The element type and shape stored in an idx file (``.gz`` or raw)."""
    with _open(path) as f:
        magic = f.read(4)
        if len(magic) != 4 or magic[:2] != b"\x00\x00" or magic[2] not in _DTYPES:
            raise ValueError(f"{path}: not an idx file (magic bytes {magic!r})")
        ndim = magic[3]
        shape = struct.unpack(f">{ndim}I", f.read(4 * ndim))
    return np.dtype(_DTYPES[magic[2]]), tuple(shape)


def read_idx(path: Path) -> np.ndarray:
    """An idx file (``.gz`` or raw) -> numpy array of its stored type and shape."""
    dtype, shape = read_idx_header(path)
    with _open(path) as f:
        data = f.read()
    offset = 4 + 4 * len(shape)
    count = int(np.prod(shape))
    if len(data) - offset < count * dtype.itemsize:
        raise ValueError(f"{path}: truncated idx file (shape {shape})")
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)


def _sizes(root: Path) -> tuple[int, int]:
    return tuple(read_idx_header(root / FILES[s][1])[1][0] for s in ("train", "test"))


@register_dataset(
    "mnist",
    folder="mnist",
    files=FILES["train"] + FILES["test"],
    how_to_get="put the four MNIST idx .gz files in <data dir>/mnist",
    sizes=_sizes,
    description="MNIST digits, 60k/10k, 1x28x28 gray",
)
def load_mnist(root: Path) -> DatasetSplits:
    """MNIST: x float32 (N, 1, 28, 28) in [0, 1], y int64 digit (10 classes); 60,000/10,000."""
    out = {}
    for split, (img_file, lbl_file) in FILES.items():
        images = read_idx(root / img_file)
        labels = read_idx(root / lbl_file)
        if images.ndim != 3 or labels.shape != (images.shape[0],):
            raise ValueError(f"{root}: {split} images {images.shape} and labels {labels.shape} do not match")
        out[split] = ArrayDataset(
            x=images_to_tensor(images), y=long_tensor(labels), name="mnist", num_classes=10,
            class_names=[str(d) for d in range(10)],
        )
    return DatasetSplits(train=out["train"], test=out["test"])
