"""USPS digits from the HDF5 file ``usps.h5`` (groups ``train``/``test`` with ``data``, ``target``)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from cotrain.data.base import ArrayDataset, DatasetSplits
from cotrain.data.readers.common import long_tensor
from cotrain.data.registry import register_dataset
from cotrain.data.transforms import resize

FILE = "usps.h5"


def _sizes(root: Path) -> tuple[int, int]:
    with h5py.File(root / FILE, "r") as f:
        return int(f["train"]["target"].shape[0]), int(f["test"]["target"].shape[0])


@register_dataset(
    "usps",
    folder="usps",
    files=(FILE,),
    how_to_get="put usps.h5 (Kaggle layout) in <data dir>/usps",
    sizes=_sizes,
    description="USPS digits, 7291/2007, 1x16x16 gray",
)
def load_usps(root: Path, *, size: int | None = None) -> DatasetSplits:
    """USPS: x float32 (N, 1, 16, 16) in [0, 1], y int64 digit (10 classes); 7,291/2,007.

    ``size=28`` resizes bilinearly to (N, 1, 28, 28) to pair with MNIST for domain adaptation.
    """
    out = {}
    with h5py.File(root / FILE, "r") as f:
        for split in ("train", "test"):
            if split not in f or "data" not in f[split] or "target" not in f[split]:
                raise ValueError(f"{root / FILE}: expected group {split!r} with 'data' and 'target'")
            data = np.asarray(f[split]["data"][:], dtype=np.float32)
            target = np.asarray(f[split]["target"][:])
            if data.ndim != 2 or data.shape[1] != 256 or target.shape != (data.shape[0],):
                raise ValueError(
                    f"{root / FILE}: {split} data {data.shape} / target {target.shape}, "
                    "expected (N, 256) / (N,)"
                )
            x = torch.from_numpy(data.reshape(-1, 1, 16, 16)).clamp_(0.0, 1.0)
            if size is not None and size != 16:
                x = resize(x, size)
            out[split] = ArrayDataset(
                x=x, y=long_tensor(target), name="usps", num_classes=10,
                class_names=[str(d) for d in range(10)],
            )
    return DatasetSplits(train=out["train"], test=out["test"])
