"""A stand-in for ``cotrain.privacy`` (being built on its own branch) with exactly its API, so
that the ECOS benchmark can run before that branch is merged. Installed only when the real
package cannot be imported, and the benchmark's JSON says so (``notes.privacy``).

Accounting is dp-accounting's PLD accountant on Gaussian events (Poisson-subsampled when the
sampling rate is below 1); nothing here is a hand formula.
"""

from __future__ import annotations

import functools
import sys
import types
from typing import Callable

import dp_accounting
import torch
from dp_accounting.pld import pld_privacy_accountant

from cotrain.runtime.spend import PrivacySpend


def _event(z: float, rate: float, count: int) -> dp_accounting.DpEvent:
    e: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(z)
    if rate < 1:
        e = dp_accounting.PoissonSampledDpEvent(rate, e)
    return dp_accounting.SelfComposedDpEvent(e, count) if count > 1 else e


def epsilon_of(spends, *, delta: float, accountant: str = "pld") -> float:
    acc = pld_privacy_accountant.PLDAccountant()
    for s in spends:
        acc.compose(_event(s.noise_multiplier, s.sampling_rate, s.count))
    return float(acc.get_epsilon(delta))


@functools.lru_cache(maxsize=64)
def noise_multiplier_for(*, epsilon: float, delta: float, compositions: int = 1, sampling_rate: float = 1.0,
                         accountant: str = "pld") -> float:
    def eps(z: float) -> float:
        acc = pld_privacy_accountant.PLDAccountant()
        acc.compose(_event(z, sampling_rate, compositions))
        return acc.get_epsilon(delta)

    lo, hi = 0.05, 1.0
    while eps(hi) > epsilon:
        lo, hi = hi, hi * 2
    for _ in range(40):  # bisection: the smallest z on the grid whose epsilon is <= the target
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if eps(mid) > epsilon else (lo, mid)
    return hi


def gaussian_mechanism(value: torch.Tensor, *, sensitivity: float, noise_multiplier: float,
                       generator: torch.Generator, party: str, round: int,
                       record: Callable[[PrivacySpend], None], sampling_rate: float = 1.0,
                       release: str = "") -> torch.Tensor:
    noise = torch.randn(value.shape, generator=generator, dtype=value.dtype) * (noise_multiplier * sensitivity)
    record(PrivacySpend(round=round, party=party, mechanism="gaussian", noise_multiplier=noise_multiplier,
                        sensitivity=sensitivity, sampling_rate=sampling_rate, release=release))
    return value + noise


def install() -> str:
    """Use the real ``cotrain.privacy`` if importable; else register this module under its name."""
    try:
        import cotrain.privacy  # noqa: F401
        return "cotrain.privacy"
    except ImportError:
        mod = types.ModuleType("cotrain.privacy")
        mod.gaussian_mechanism, mod.noise_multiplier_for, mod.epsilon_of = \
            gaussian_mechanism, noise_multiplier_for, epsilon_of
        sys.modules["cotrain.privacy"] = mod
        return "benchmarks/_privacy_standin.py (cotrain.privacy not merged yet): dp-accounting PLD"
