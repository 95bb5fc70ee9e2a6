"""Decoding many small image files (PNG, JPEG) into one uint8 array with PIL."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from cotrain.data.readers.cache import cached_arrays, files_fingerprint


def decode_image(path: Path, size: int | None, mode: str = "RGB") -> np.ndarray:
    """One image file -> uint8 array (H, W, C) for ``mode="RGB"``, (H, W) for ``"L"``.

    With ``size`` the image is resized to ``size x size`` (bilinear, antialiased); JPEGs are
    first decoded at a reduced scale when that is still at least ``size`` pixels (much faster).
    """
    with Image.open(path) as img:
        if size is not None and img.format == "JPEG":
            img.draft(mode, (size, size))
        img = img.convert(mode)
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def decode_images(
    paths: Sequence[Path], size: int | None, mode: str = "RGB", workers: int | None = None
) -> np.ndarray:
    """Decode ``paths`` in order -> uint8 (N, H, W, C) (or (N, H, W) for ``mode="L"``).

    All images must share one size when ``size`` is None. PIL releases the GIL while decoding,
    so a few threads help.
    """
    if not paths:
        raise ValueError("no image files to decode")
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(lambda p: decode_image(p, size, mode), paths))
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(f"images differ in shape {sorted(shapes)}; pass size= to resize them")
    return np.stack(images)


def load_image_files(
    prefix: str, paths: Sequence[Path], size: int | None, *, cache: bool = True
) -> np.ndarray:
    """:func:`decode_images` (RGB) through the on-disk cache, keyed by the files and ``size``."""
    key = {"size": size, "files": files_fingerprint(paths)}
    return cached_arrays(prefix, key, lambda: {"x": decode_images(paths, size, "RGB")}, enabled=cache)["x"]
