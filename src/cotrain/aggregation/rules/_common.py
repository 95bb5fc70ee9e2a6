"""Pieces the robust rules share: option checks, exact distances, the median, the MAD threshold.

Not a rule (the leading underscore keeps the auto-import from treating it as one).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from cotrain.aggregation.base import AGGREGATORS, AggregationError, Aggregator, build_aggregator
from cotrain.errors import OptionsError

MAD_TO_SIGMA = 1.4826  # 1 / Phi^-1(3/4): MAD * this estimates a normal's standard deviation


def int_option(rule: str, name: str, value: Any, *, minimum: int) -> int:
    """``value`` as an int >= ``minimum``, else :class:`OptionsError` (bools and floats refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionsError(f"aggregator {rule!r}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def float_option(rule: str, name: str, value: Any, *, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float inside the interval, else :class:`OptionsError` (ints accepted: TOML)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo, hi = ("(" if low_open else "[") + f"{low}", f"{high}" + (")" if high_open else "]")
        raise OptionsError(f"aggregator {rule!r}: {name} must be a number in {lo}, {hi}, got {value!r}")
    return float(value)


def bool_option(rule: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionsError(f"aggregator {rule!r}: {name} must be true or false, got {value!r}")
    return value


def choice_option(rule: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise OptionsError(f"aggregator {rule!r}: {name} must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def inner_rule(rule: str, name: Any, options: Any) -> Aggregator:
    """A pre-aggregator's inner rule, ``build_aggregator(name, **options)`` with the options checked."""
    if options is not None and not isinstance(options, dict):
        raise OptionsError(f"aggregator {rule!r}: options must be a table of the inner rule's options, "
                           f"got {options!r}")
    return build_aggregator(AGGREGATORS.check_name(name), **(options or {}))


def require(condition: bool, message: str) -> None:
    """:class:`AggregationError` with ``message`` unless ``condition`` (a round that does not fit the rule)."""
    if not condition:
        raise AggregationError(message)


def pairwise_sq_distances(x: torch.Tensor) -> torch.Tensor:
    """(n, n) squared Euclidean distances between the rows of ``x`` (n, d), without the
    ``|a|^2 + |b|^2 - 2ab`` shortcut (it cancels catastrophically for nearby rows)."""
    return torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist") ** 2


def median_rows(x: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise median of the rows of ``x`` (n, d); for even n the mean of the two middle
    values (NumPy's definition; torch's ``median`` takes the lower one)."""
    n = x.shape[0]
    ordered = x.sort(dim=0).values
    if n % 2:
        return ordered[n // 2]
    return (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def mad_threshold(scores: torch.Tensor, kappa: float) -> float:
    """median + kappa * 1.4826 * MAD of ``scores`` (1-d): a robust "kappa sigmas above typical"."""
    med = median_rows(scores.reshape(-1, 1))[0]
    mad = median_rows((scores - med).abs().reshape(-1, 1))[0]
    return float(med + kappa * MAD_TO_SIGMA * mad)
