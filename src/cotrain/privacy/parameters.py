"""Validation of privacy parameters: every check raises :class:`PrivacyParameterError`, one line.

Privacy parameters are never defaulted or inferred silently; a bad value stops the run before any
release is made, with the parameter's name and the accepted range in the message.
"""

from __future__ import annotations

import math
from typing import Any

from cotrain.errors import CotrainError


class PrivacyParameterError(CotrainError, ValueError):
    """A privacy parameter out of range (``delta must be in (0, 1), got 1.0``)."""


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PrivacyParameterError(f"{name} must be a number, got {value!r}")
    return float(value)


def positive(value: Any, name: str) -> float:
    """``value`` as a float if it is finite and > 0."""
    x = _number(value, name)
    if not (math.isfinite(x) and x > 0):
        raise PrivacyParameterError(f"{name} must be a finite number > 0, got {value!r}")
    return x


def non_negative(value: Any, name: str) -> float:
    """``value`` as a float if it is finite and >= 0."""
    x = _number(value, name)
    if not (math.isfinite(x) and x >= 0):
        raise PrivacyParameterError(f"{name} must be a finite number >= 0, got {value!r}")
    return x


def delta(value: Any, name: str = "delta") -> float:
    """A target delta, in the open interval (0, 1)."""
    x = _number(value, name)
    if not 0 < x < 1:
        raise PrivacyParameterError(f"{name} must be in (0, 1), got {value!r}")
    return x


def sampling_rate(value: Any, name: str = "sampling_rate") -> float:
    """A Poisson sampling probability, in (0, 1]."""
    x = _number(value, name)
    if not 0 < x <= 1:
        raise PrivacyParameterError(f"{name} must be in (0, 1], got {value!r}")
    return x


def count(value: Any, name: str) -> int:
    """A number of compositions, an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PrivacyParameterError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def round_number(value: Any, name: str = "round") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PrivacyParameterError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def party(value: Any, name: str = "party") -> str:
    if not isinstance(value, str) or not value:
        raise PrivacyParameterError(f"{name} must be a non-empty string, got {value!r}")
    return value


def clip_and_noise(clip_norm: Any, noise_multiplier: Any, what: str) -> tuple[float | None, float]:
    """``(C or None, sigma >= 0)`` for a clip-then-noise rule; noise without a clipping bound is an error
    (the noise is scaled to the bound, the release's sensitivity)."""
    clip = None if clip_norm is None else positive(clip_norm, f"{what}: clip_norm")
    sigma = non_negative(noise_multiplier, f"{what}: noise_multiplier")
    if sigma > 0 and clip is None:
        raise PrivacyParameterError(f"{what}: noise_multiplier > 0 needs clip_norm (the noise is scaled to the "
                                    "clipping bound, the update's sensitivity)")
    return clip, sigma
