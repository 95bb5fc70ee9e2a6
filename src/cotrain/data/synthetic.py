"""The built-in generated data set: stroke images with classes, domains and private attributes.

No files, deterministic from ``seed``, fast (10,000 1x28x28 samples in a fraction of a second).

* **class**: a fixed recipe of ``STROKES_PER_CLASS`` smooth strokes drawn from a shared pool
  of ``2 * num_classes`` (two classes share at most one stroke, so telling them apart needs the
  combination). Per sample every
  stroke is jittered by up to one pixel and weighted at random, the whole drawing is shifted by
  up to ``2 * size / 28`` pixels, and Gaussian pixel noise is added.
* **domain** (style): domain 0 is white on black; the others invert contrast, add a background
  grating, blur, lower the contrast or (3 channels) tint foreground and background.
* **attributes**, independent of class and domain, and visible in the image:
  ``thickness`` (0 thin strokes, 1 thick strokes) and ``marker`` (1: a small solid square in the
  top-left corner).

Train and test come from different random streams but the same prototypes and styles.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from cotrain.data.base import ArrayDataset, DatasetSplits
from cotrain.data.registry import register_dataset
from cotrain.seeding import numpy_rng

STROKES_PER_CLASS = 3
NOISE_STD = 0.1


@dataclass(frozen=True)
class Style:
    """How one domain renders a stroke mask: colours (C,), blur sigma, background grating."""

    fg: np.ndarray
    bg: np.ndarray
    blur: float
    texture: float
    freq: tuple[float, float]


@dataclass(frozen=True)
class Prototypes:
    """Everything fixed by the seed: strokes (S, 2, H, W) thin/thick, recipes (K, 3), styles."""

    strokes: np.ndarray
    recipes: np.ndarray
    styles: list[Style]


def _render_stroke(rng: np.random.Generator, size: int, widths: tuple[float, float]) -> np.ndarray:
    """A random quadratic Bezier curve as intensity images (2, size, size), thin and thick."""
    ctrl = rng.uniform(0.22 * size, 0.78 * size, size=(3, 2))
    t = np.linspace(0.0, 1.0, 24)[:, None]
    pts = (1 - t) ** 2 * ctrl[0] + 2 * (1 - t) * t * ctrl[1] + t**2 * ctrl[2]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    d2 = ((yy[None] - pts[:, 0, None, None]) ** 2 + (xx[None] - pts[:, 1, None, None]) ** 2).min(0)
    return np.stack([np.exp(-d2 / (2 * w**2)) for w in widths])


def _styles(rng: np.random.Generator, num_domains: int, channels: int) -> list[Style]:
    styles = []
    for d in range(num_domains):
        kind = 0 if d == 0 else 1 + (d - 1) % 4
        fg, bg = {0: (1.0, 0.0), 1: (0.05, 0.95), 2: (0.95, 0.1), 3: (0.8, 0.25), 4: (0.15, 0.7)}[kind]
        blur = {3: 1.0, 4: 0.6}.get(kind, 0.0)
        texture = {2: 0.35, 4: 0.25}.get(kind, 0.0)
        fg_c, bg_c = np.full(channels, fg), np.full(channels, bg)
        if channels == 3 and d > 0:
            fg_c = np.clip(fg_c + rng.uniform(-0.25, 0.25, 3), 0, 1)
            bg_c = np.clip(bg_c + rng.uniform(-0.25, 0.25, 3), 0, 1)
        freq = tuple(rng.uniform(1.5, 4.0, 2) * rng.choice([-1, 1], 2))
        styles.append(Style(fg_c, bg_c, blur, texture, freq))
    return styles


def make_prototypes(seed: int, num_classes: int, channels: int, size: int, num_domains: int) -> Prototypes:
    """The fixed part of the generator (see the module docstring)."""
    rng = numpy_rng(seed, "synthetic", "prototypes")
    n_pool = 2 * num_classes
    scale = size / 28
    strokes = np.stack([_render_stroke(rng, size, (0.8 * scale, 1.6 * scale)) for _ in range(n_pool)])
    return Prototypes(strokes.astype(np.float32), _recipes(rng, num_classes, n_pool),
                      _styles(rng, num_domains, channels))


def _recipes(rng: np.random.Generator, num_classes: int, n_pool: int) -> np.ndarray:
    """(num_classes, STROKES_PER_CLASS) distinct stroke sets; two classes share at most one
    stroke where random search finds such sets quickly."""
    recipes: list[set[int]] = []
    tries = 0
    while len(recipes) < num_classes:
        r = set(rng.choice(n_pool, STROKES_PER_CLASS, replace=False).tolist())
        tries += 1
        max_shared = 1 if tries < 200 * num_classes else STROKES_PER_CLASS - 1
        if all(len(r & other) <= max_shared for other in recipes):
            recipes.append(r)
    return np.asarray([sorted(r) for r in recipes])


def _shift(a: np.ndarray, dy: np.ndarray, dx: np.ndarray, pad: int) -> np.ndarray:
    """Shift each image of (N, H, W) by its own integer (dy, dx), |dy|, |dx| <= pad; zero fill."""
    out = np.zeros_like(a)
    h, w = a.shape[1:]
    for sy in range(-pad, pad + 1):
        for sx in range(-pad, pad + 1):
            sel = np.flatnonzero((dy == sy) & (dx == sx))
            if len(sel):
                out[sel, max(sy, 0):h + min(sy, 0), max(sx, 0):w + min(sx, 0)] = a[
                    sel, max(-sy, 0):h + min(-sy, 0), max(-sx, 0):w + min(-sx, 0)]
    return out


def generate(proto: Prototypes, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n`` samples: x float32 (n, C, H, W) in [0, 1], y/domain/thickness/marker int64 (n,)."""
    n_cls, size = len(proto.recipes), proto.strokes.shape[-1]
    channels = len(proto.styles[0].fg)
    y = rng.permutation(np.arange(n) % n_cls)
    domain = rng.integers(0, len(proto.styles), n)
    thick = rng.integers(0, 2, n)
    marker = rng.integers(0, 2, n)
    mask = np.zeros((n, size, size), dtype=np.float32)
    for k in range(proto.recipes.shape[1]):
        weight = rng.uniform(0.7, 1.0, (n, 1, 1)).astype(np.float32)
        stroke = proto.strokes[proto.recipes[y, k], thick] * weight
        jitter = rng.integers(-1, 2, (2, n))
        mask = np.maximum(mask, _shift(stroke, jitter[0], jitter[1], 1))
    pad = max(1, round(2 * size / 28))
    mask = _shift(mask, *rng.integers(-pad, pad + 1, (2, n)), pad)
    m = max(2, size // 8)
    mask[marker == 1, 1:1 + m, 1:1 + m] = 1.0
    for d, st in enumerate(proto.styles):
        if st.blur > 0:
            sel = np.flatnonzero(domain == d)
            mask[sel] = gaussian_filter(mask[sel], sigma=(0, st.blur, st.blur))
    fg = torch.from_numpy(np.stack([st.fg for st in proto.styles]).astype(np.float32))[domain]
    bg = torch.from_numpy(np.stack([st.bg for st in proto.styles]).astype(np.float32))[domain]
    phase = rng.uniform(0, 2 * np.pi, n)
    back = bg[:, :, None, None].expand(n, channels, size, size).clone()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for d, st in enumerate(proto.styles):
        if st.texture > 0:
            sel = np.flatnonzero(domain == d)
            wave = 2 * np.pi * (st.freq[0] * yy + st.freq[1] * xx)[None] + phase[sel, None, None]
            grating = (0.5 * st.texture) * (1 + np.sin(wave.astype(np.float32)))
            back[sel] += torch.from_numpy(grating)[:, None]
    s = torch.from_numpy(mask)[:, None]
    x = back.add_((fg[:, :, None, None] - back).mul_(s))
    noise = rng.standard_normal((n, 1, size, size), dtype=np.float32)
    x = x.add_(torch.from_numpy(noise), alpha=NOISE_STD).clamp_(0, 1).numpy()
    return {"x": x, "y": y, "domain": domain, "thickness": thick, "marker": marker}


def _dataset(arrays: dict[str, np.ndarray], num_classes: int) -> ArrayDataset:
    def t(k: str) -> torch.Tensor:
        return torch.from_numpy(arrays[k].astype(np.int64))

    return ArrayDataset(
        x=torch.from_numpy(arrays["x"]), y=t("y"),
        attributes={"thickness": t("thickness"), "marker": t("marker")},
        domain=t("domain"), name="synthetic", num_classes=num_classes,
        attribute_values={"thickness": ["thin", "thick"], "marker": ["absent", "present"]},
    )


def make_synthetic(
    *,
    n_train: int = 10000,
    n_test: int = 2000,
    num_classes: int = 10,
    channels: int = 1,
    size: int = 28,
    num_domains: int = 3,
    seed: int = 0,
) -> DatasetSplits:
    """Generate the data set: x float32 (N, channels, size, size) in [0, 1], y int64
    (``num_classes`` balanced classes), domain int64 (N,) uniform over ``num_domains``,
    attributes ``thickness`` and ``marker`` int64 (N,), each a fair coin independent of all else.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    if not 2 <= num_classes <= 100:
        raise ValueError(f"num_classes must be in 2..100, got {num_classes}")
    if num_domains < 1 or n_train < 1 or n_test < 1:
        raise ValueError("num_domains, n_train and n_test must be >= 1")
    proto = make_prototypes(seed, num_classes, channels, size, num_domains)
    train = generate(proto, n_train, numpy_rng(seed, "synthetic", "train"))
    test = generate(proto, n_test, numpy_rng(seed, "synthetic", "test"))
    return DatasetSplits(train=_dataset(train, num_classes), test=_dataset(test, num_classes))


@register_dataset(
    "synthetic",
    how_to_get="built in (generated, no files)",
    sizes=lambda _root: (10000, 2000),
    description="generated strokes: classes, style domains, thickness/marker attributes",
)
@functools.wraps(make_synthetic)
def load_synthetic(root: Path | None, **options: Any) -> DatasetSplits:
    """Registry entry for :func:`make_synthetic` (same options; ``root`` is unused)."""
    return make_synthetic(**options)
