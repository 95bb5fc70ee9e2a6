"""Clipping to an L2 bound: the step that gives a release a known sensitivity.

FlatClip (McMahan et al., "Learning Differentially Private Recurrent Language Models", ICLR 2018,
and Abadi et al., CCS 2016): with ``v`` the concatenation of every tensor,

    clip(v) = v * min(1, C / ||v||_2)

so ``||clip(v)||_2 <= C`` and the direction of ``v`` is kept. A mapping is clipped as one vector
(the joint norm over all its tensors), the way an update of many parameter tensors is.
"""

from __future__ import annotations

import math
from typing import Mapping, overload

import torch

from cotrain.privacy import parameters as check
from cotrain.privacy.parameters import PrivacyParameterError

def tensors_of(value: torch.Tensor | Mapping[str, torch.Tensor], what: str) -> list[torch.Tensor]:
    """The floating tensors of ``value`` in order; anything else is an error, never skipped."""
    items = [("value", value)] if isinstance(value, torch.Tensor) else list(value.items())
    for name, t in items:
        if not isinstance(t, torch.Tensor):
            raise PrivacyParameterError(f"{what}: {name!r} is {type(t).__name__}, expected a torch.Tensor")
        if not t.is_floating_point():
            # integers cannot carry noise; the caller picks the floating tensors it releases
            raise PrivacyParameterError(f"{what}: tensor {name!r} has dtype {t.dtype}; only floating tensors")
    return [t for _, t in items]


def l2_norm(value: torch.Tensor | Mapping[str, torch.Tensor]) -> float:
    """The joint L2 norm of every tensor of ``value``, in float64."""
    parts = [t.detach().to(torch.float64).reshape(-1) for t in tensors_of(value, "l2_norm")]
    peak = max((float(p.abs().max()) for p in parts if p.numel()), default=0.0)
    if peak == 0.0 or not math.isfinite(peak):
        return peak
    # scaled by the largest entry, so tiny and huge vectors neither underflow nor overflow
    return peak * math.sqrt(sum(float((p / peak).pow(2).sum()) for p in parts))


@overload
def clip_l2(value: torch.Tensor, *, max_norm: float) -> tuple[torch.Tensor, float]: ...
@overload
def clip_l2(value: Mapping[str, torch.Tensor], *, max_norm: float) -> tuple[dict[str, torch.Tensor], float]: ...


def clip_l2(value: torch.Tensor | Mapping[str, torch.Tensor], *,
            max_norm: float) -> tuple[torch.Tensor | dict[str, torch.Tensor], float]:
    """``value`` scaled by ``min(1, max_norm / ||value||_2)``, and the norm before clipping.

    Args:
        value: a floating tensor, or a mapping of names to floating tensors (clipped jointly).
        max_norm: the bound C, finite and > 0.

    Returns:
        ``(clipped, norm)``: the clipped value (same type and dtypes; a mapping comes back as a
        dict in the same order) and ``||value||_2`` before clipping. The scaling is done in float64;
        casting back to a lower precision can exceed C by a rounding error (about 1e-7 relative in
        float32).
    """
    bound = check.positive(max_norm, "max_norm")
    norm = l2_norm(value)
    if not math.isfinite(norm):  # inf * 0 is NaN: no bound would hold
        raise PrivacyParameterError(f"clip_l2: the value has non-finite entries (norm {norm}); nothing to clip")
    scale = min(1.0, bound / norm) if norm > 0 else 1.0

    def scaled(t: torch.Tensor) -> torch.Tensor:
        return t.detach().clone() if scale == 1.0 else (t.detach().to(torch.float64) * scale).to(t.dtype)

    if isinstance(value, torch.Tensor):
        return scaled(value), norm
    return {name: scaled(t) for name, t in value.items()}, norm
