"""Weak and strong image views for FixMatch (Sohn et al., NeurIPS 2020), batched in torch.

Both take images x float32 (N, C, H, W) in [0, 1] and return a new tensor of the same shape in
[0, 1]; every random draw comes from the ``generator`` passed in, per sample, in a fixed order, so
one seed gives one set of views.

* ``weak_augment``: optional horizontal flip (p = 1/2), a rotation by U(-r, r) degrees and an
  integer translation by U{-s..s} pixels on each axis (reflect padding, as in FixMatch). Digits:
  ``flip=False``.
* ``strong_augment``: FixMatch's RandAugment variant (its Table 12): per image ``num_ops`` operations
  drawn uniformly from ``OPS``, each at a random strength level ``U(0, 1) * magnitude / 10``, then
  Cutout (a square of side ``cutout * H`` at a uniform centre, filled with gray 0.5). Ranges at full
  strength: brightness / contrast / sharpness factor 1 +- 0.9, posterize to 4..8 bits, rotate +-30
  degrees, shear +-0.3, solarize threshold 1..0, translate +-0.3 of the side; autocontrast and
  equalize have no strength. Signed ones take a random sign. Enhancement ops follow Pillow's
  definitions (``ImageEnhance`` / ``ImageOps``) on 8-bit levels where Pillow quantises.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cotrain.errors import ConfigError

_LUMA = (0.299, 0.587, 0.114)
FILL = 0.5  # FixMatch fills uncovered pixels with gray (128)


def _luma(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x.mean(dim=1, keepdim=True)
    return (x * torch.tensor(_LUMA, dtype=x.dtype).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def affine(x: torch.Tensor, theta: torch.Tensor, *, fill: float | None = FILL) -> torch.Tensor:
    """Warp by per-image 2x3 matrices ``theta`` (N, 2, 3) mapping output to input pixel coordinates
    (pixels, origin at the image centre), bilinear; uncovered pixels get ``fill``, or with
    ``fill=None`` the reflection of the image (its own background)."""
    _, _, h, w = x.shape
    # pixel units -> the [-1, 1] units of affine_grid (align_corners=False)
    scale = torch.tensor([[2.0 / w, 0.0], [0.0, 2.0 / h]], dtype=x.dtype)
    inv = torch.tensor([[w / 2.0, 0.0], [0.0, h / 2.0]], dtype=x.dtype)
    lin = scale @ theta[:, :, :2].to(x.dtype) @ inv
    shift = (scale @ theta[:, :, 2:].to(x.dtype))
    grid = F.affine_grid(torch.cat([lin, shift], dim=2), list(x.shape), align_corners=False)
    if fill is None:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def _theta(n: int, a=None, b=None, c=None, d=None, tx=None, ty=None) -> torch.Tensor:
    t = torch.zeros(n, 2, 3)
    t[:, 0, 0] = 1.0 if a is None else a
    t[:, 0, 1] = 0.0 if b is None else b
    t[:, 1, 0] = 0.0 if c is None else c
    t[:, 1, 1] = 1.0 if d is None else d
    t[:, 0, 2] = 0.0 if tx is None else tx
    t[:, 1, 2] = 0.0 if ty is None else ty
    return t


def rotate(x: torch.Tensor, degrees: torch.Tensor, *, fill: float | None = FILL) -> torch.Tensor:
    """Rotate each image about its centre by ``degrees`` (N,), counter-clockwise on screen."""
    r = torch.deg2rad(degrees.float())
    cos, sin = torch.cos(r), torch.sin(r)
    return affine(x, _theta(len(x), a=cos, b=-sin, c=sin, d=cos), fill=fill)


def shear_x(x: torch.Tensor, s: torch.Tensor, *, fill: float = FILL) -> torch.Tensor:
    """Output pixel (u, v) reads input (u + s v, v), Pillow's ``(1, s, 0, 0, 1, 0)`` transform."""
    return affine(x, _theta(len(x), b=s.float()), fill=fill)


def shear_y(x: torch.Tensor, s: torch.Tensor, *, fill: float = FILL) -> torch.Tensor:
    return affine(x, _theta(len(x), c=s.float()), fill=fill)


def translate(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, *, fill: float = FILL) -> torch.Tensor:
    """Move the content by (dx, dy) pixels (N,) each: right and down for positive values."""
    return affine(x, _theta(len(x), tx=-dx.float(), ty=-dy.float()), fill=fill)


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image to [0, 1]; a constant channel is left as it is."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    out = (x - lo) / span.clamp_min(1e-12)
    return torch.where(span > 0, out, x)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1).to(x.dtype)
    return (degenerate + f * (x - degenerate)).clamp(0.0, 1.0)


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Pillow's Brightness: blend with black."""
    return _blend(torch.zeros_like(x), x, factor)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Pillow's Contrast: blend with the image's mean gray level."""
    mean = _luma(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(mean.expand_as(x), x, factor)


def sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Pillow's Sharpness: blend with the SMOOTH-filtered image (kernel 1 1 1 / 1 5 1 / 1 1 1, /13),
    whose border pixels are the original's."""
    c = x.shape[1]
    k = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], dtype=x.dtype) / 13.0
    smooth = F.conv2d(x, k.expand(c, 1, 3, 3), groups=c)
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth
    return _blend(degenerate, x, factor)


def _levels(x: torch.Tensor) -> torch.Tensor:
    return (x * 255.0).round().clamp(0, 255).long()


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top ``bits`` (N,) bits of each 8-bit level."""
    step = (2 ** (8 - bits.long())).view(-1, 1, 1, 1)
    return (torch.div(_levels(x), step, rounding_mode="floor") * step).to(x.dtype) / 255.0


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert (v -> 1 - v) every value at or above ``threshold`` (N,)."""
    t = threshold.view(-1, 1, 1, 1).to(x.dtype)
    return torch.where(x >= t, 1.0 - x, x)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Pillow's ``ImageOps.equalize`` per channel on 8-bit levels: with h the histogram, step =
    (sum h - h[last non-empty level]) // 255, level i maps to (sum_{j<i} h_j + step // 2) // step;
    a channel with step 0 is unchanged."""
    n, c, hh, ww = x.shape
    v = _levels(x).view(n * c, hh * ww)
    hist = torch.zeros(n * c, 256, dtype=torch.long).scatter_add_(1, v, torch.ones_like(v))
    last = (torch.arange(256) * (hist > 0)).amax(dim=1, keepdim=True)
    step = torch.div(hist.sum(1, keepdim=True) - hist.gather(1, last), 255, rounding_mode="floor")
    before = hist.cumsum(1) - hist
    lut = torch.div(before + torch.div(step, 2, rounding_mode="floor"), step.clamp_min(1), rounding_mode="floor")
    lut = torch.where(step > 0, lut.clamp(max=255), torch.arange(256).expand(n * c, 256))
    return (lut.gather(1, v).view(n, c, hh, ww).to(x.dtype) / 255.0)


def cutout(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, side: int, *, fill: float = FILL) -> torch.Tensor:
    """Fill a ``side`` x ``side`` square centred at integer (cy, cx) (N,) each, clipped to the image."""
    _, _, h, w = x.shape
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    top = (cy - side // 2).view(-1, 1, 1)
    left = (cx - side // 2).view(-1, 1, 1)
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return torch.where(inside.unsqueeze(1), torch.full_like(x, fill), x)


def _signed(level: torch.Tensor, sign: torch.Tensor, top: float) -> torch.Tensor:
    return level * top * sign


OPS = ("autocontrast", "brightness", "contrast", "equalize", "posterize", "rotate", "sharpness",
       "shear_x", "shear_y", "solarize", "translate_x", "translate_y")


def _apply(name: str, x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    side = x.shape[-1]
    if name == "autocontrast":
        return autocontrast(x)
    if name == "equalize":
        return equalize(x)
    if name in ("brightness", "contrast", "sharpness"):
        fn = {"brightness": brightness, "contrast": contrast, "sharpness": sharpness}[name]
        return fn(x, 1.0 + _signed(level, sign, 0.9))
    if name == "posterize":
        return posterize(x, 8 - torch.round(4 * level).long())
    if name == "rotate":
        return rotate(x, _signed(level, sign, 30.0))
    if name == "shear_x":
        return shear_x(x, _signed(level, sign, 0.3))
    if name == "shear_y":
        return shear_y(x, _signed(level, sign, 0.3))
    if name == "solarize":
        return solarize(x, 1.0 - level)
    shift = torch.round(_signed(level, sign, 0.3 * side))
    zero = torch.zeros_like(shift)
    return translate(x, shift, zero) if name == "translate_x" else translate(x, zero, shift)


def strong_augment(x: torch.Tensor, *, generator: torch.Generator, num_ops: int = 2, magnitude: float = 10,
                   cutout_fraction: float = 0.5) -> torch.Tensor:
    """FixMatch's strong view (RandAugment variant + Cutout); see the module docstring."""
    if num_ops < 0 or not 0 <= magnitude <= 10 or not 0 <= cutout_fraction <= 1:
        raise ConfigError(f"strong_augment: need num_ops >= 0, magnitude in [0, 10], cutout_fraction in [0, 1]; "
                          f"got {num_ops}, {magnitude}, {cutout_fraction}")
    n, _, h, w = x.shape
    ops = torch.randint(len(OPS), (num_ops, n), generator=generator)
    levels = torch.rand(num_ops, n, generator=generator) * (magnitude / 10.0)
    signs = torch.randint(2, (num_ops, n), generator=generator).float() * 2 - 1
    cy = torch.randint(h, (n,), generator=generator)
    cx = torch.randint(w, (n,), generator=generator)
    out = x.clone()
    for slot in range(num_ops):
        for k, name in enumerate(OPS):
            idx = torch.nonzero(ops[slot] == k).flatten()
            if len(idx):
                out[idx] = _apply(name, out[idx], levels[slot, idx], signs[slot, idx])
    side = int(round(cutout_fraction * h))
    return cutout(out, cy, cx, side) if side > 0 else out


def weak_augment(x: torch.Tensor, *, generator: torch.Generator, flip: bool = False, max_shift: int = 2,
                 max_rotate_deg: float = 10.0) -> torch.Tensor:
    """FixMatch's weak view: optional flip, rotation by U(-r, r) degrees, integer shift (reflect pad)."""
    if max_shift < 0 or max_rotate_deg < 0:
        raise ConfigError(f"weak_augment: max_shift and max_rotate_deg must be >= 0, got {max_shift}, {max_rotate_deg}")
    n, _, h, w = x.shape
    flips = torch.rand(n, generator=generator) < 0.5
    angles = (torch.rand(n, generator=generator) * 2 - 1) * max_rotate_deg
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator)
    out = torch.where((flips & flip).view(-1, 1, 1, 1), x.flip(-1), x)
    if max_rotate_deg > 0:
        # rotation fills with the image's own border (digits: background), not gray
        out = rotate(out, angles, fill=None)
    if max_shift > 0:
        out = shift_reflect(out, shifts[:, 0], shifts[:, 1])
    return out


def shift_reflect(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Move each image by integer (dy, dx) (N,) pixels (down, right), reflect-padding the edge."""
    m = int(max(dy.abs().max().item(), dx.abs().max().item())) if len(x) else 0
    if m == 0:
        return x
    _, _, h, w = x.shape
    padded = F.pad(x, (m, m, m, m), mode="reflect") if m < min(h, w) else F.pad(x, (m, m, m, m), mode="replicate")
    rows = (torch.arange(h).view(1, h) + m - dy.view(-1, 1))  # output row r reads padded row r + m - dy
    cols = (torch.arange(w).view(1, w) + m - dx.view(-1, 1))
    idx_r = rows.view(-1, 1, h, 1).expand(-1, x.shape[1], h, padded.shape[-1])
    out = padded.gather(2, idx_r)
    idx_c = cols.view(-1, 1, 1, w).expand(-1, x.shape[1], h, w)
    return out.gather(3, idx_c)

