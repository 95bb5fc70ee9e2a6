"""A user-brought data set in one ``.npz`` file.

Keys: ``x`` (N, ...) inputs, ``y`` (N,) integer labels, optional ``attr_<name>`` (N,) integer
attributes, optional ``domain`` (N,) integer domains, optional ``class_names`` (C,) strings.
A test split is given by the same keys with a ``_test`` suffix (``x_test``, ``y_test``,
``attr_<name>_test``, ``domain_test``); without it the samples are split by ``test_fraction``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cotrain.data.base import ArrayDataset, DatasetSplits
from cotrain.data.readers.common import long_tensor, stratified_split
from cotrain.data.registry import DatasetCorruptError, not_found, register_dataset

LAYOUTS = ("NCHW", "NHWC")


def _inputs(x: np.ndarray, layout: str, where: str) -> torch.Tensor:
    if x.ndim < 2:
        raise ValueError(f"{where}: x must have shape (N, D) or (N, [C,] H, W), got {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{where}: x must be numeric, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    out = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if x.dtype == np.uint8:
        out /= 255.0
    if not torch.isfinite(out).all():
        raise ValueError(f"{where}: x holds NaN or infinite values")
    return out


def _codes(values: np.ndarray, n: int, where: str) -> torch.Tensor:
    if values.shape != (n,):
        raise ValueError(f"{where}: shape {values.shape}, expected ({n},) to match x")
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{where}: must hold integers, got dtype {values.dtype}")
    if n and values.min() < 0:
        raise ValueError(f"{where}: must be >= 0, got min {values.min()}")
    return long_tensor(values)


def _split_keys(files: list[str], where: Path) -> tuple[list[str], bool]:
    """Attribute names and whether a test split is present; errors for unknown/unpaired keys."""
    base = {"x", "y", "domain", "class_names"}
    known = base | {k + "_test" for k in base - {"class_names"}}
    attrs = sorted(k[5:] for k in files if k.startswith("attr_") and not k.endswith("_test"))
    known |= {f"attr_{a}" for a in attrs} | {f"attr_{a}_test" for a in attrs}
    unknown = sorted(set(files) - known)
    if unknown:
        raise ValueError(
            f"{where}: unknown keys {unknown}; expected x, y, attr_<name>, domain, class_names (+ _test)"
        )
    for key in ("x", "y"):
        if key not in files:
            raise ValueError(f"{where}: missing required array {key!r} (has {sorted(files)})")
    has_test = "x_test" in files or "y_test" in files
    if has_test:
        for key in ["x", "y", "domain"] + [f"attr_{a}" for a in attrs]:
            if (key in files) != (key + "_test" in files):
                raise ValueError(f"{where}: {key!r} and {key + '_test'!r} must be given together")
    return attrs, has_test


@register_dataset("npz", how_to_get="pass path=<file.npz>", description="a user-brought .npz file")
def load_npz(
    root: Path | None,
    *,
    path: str | Path | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    layout: str = "NCHW",
    name: str | None = None,
) -> DatasetSplits:
    """Load ``path`` (see the module docstring for keys): x float32 (uint8 scaled to [0, 1]);
    (N, H, W) gains a channel axis, (N, H, W, C) needs ``layout="NHWC"``. Labels int64 (N,).
    Without ``*_test`` keys the split is stratified by label, deterministic from ``seed``.
    """
    if path is None:
        raise ValueError("data set 'npz' needs path=<file.npz>")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise not_found(path, "npz data set", "pass path=<file.npz>")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except ValueError as exc:  # numpy's word for "not an .npz of plain arrays" (object arrays, garbage)
        raise DatasetCorruptError(f"{path}: not an .npz file of plain arrays ({exc})") from exc
    attrs, has_test = _split_keys(list(arrays), path)
    name = name or path.stem
    class_names = [str(c) for c in arrays["class_names"]] if "class_names" in arrays else None

    def build(suffix: str) -> ArrayDataset:
        x = _inputs(arrays["x" + suffix], layout, f"{path}: x{suffix}")
        n = x.shape[0]
        dom = arrays.get("domain" + suffix)
        return ArrayDataset(
            x=x,
            y=_codes(arrays["y" + suffix], n, f"{path}: y{suffix}"),
            attributes={
                a: _codes(arrays[f"attr_{a}{suffix}"], n, f"{path}: attr_{a}{suffix}") for a in attrs
            },
            domain=None if dom is None else _codes(dom, n, f"{path}: domain{suffix}"),
            name=name,
            class_names=class_names,
        )

    train = build("")
    if has_test:
        test = build("_test")
        if test.input_shape != train.input_shape:
            raise ValueError(
                f"{path}: x_test samples have shape {test.input_shape}, x has {train.input_shape}"
            )
        num_classes = max(train.num_classes, test.num_classes, len(class_names or []))
        train.num_classes = test.num_classes = num_classes
        return DatasetSplits(train=train, test=test)
    train.num_classes = max(train.num_classes, len(class_names or []))
    tr, te = stratified_split(train.y.numpy(), test_fraction, seed, "npz", name)
    return DatasetSplits(train=train.subset(tr), test=train.subset(te))
