"""The Gaussian and Laplace mechanisms: add calibrated noise and record the release.

Gaussian (Dwork & Roth, "The Algorithmic Foundations of Differential Privacy", 2014, App. A;
accounted exactly by the PLD of Koskela et al. / Doroshenko et al. 2022 in dp-accounting):

    M(v) = v + N(0, (sigma * Delta_2)^2 I)

with ``Delta_2`` the L2 sensitivity the caller states and ``sigma`` the noise multiplier.

Laplace (Dwork et al., TCC 2006):

    M(v) = v + Lap(b)^d,   b = lambda * Delta_1

with ``Delta_1`` the L1 sensitivity and ``lambda`` the noise multiplier (pure (1/lambda)-DP for
one release).

Each call draws the noise from the caller's ``generator`` (a named stream of the root seed: the
same seed gives the same noise) and calls ``record`` with exactly one
:class:`~cotrain.runtime.spend.PrivacySpend`. A zero or infinite noise multiplier is an error,
not a "no noise" switch: a noiseless release is not differentially private and must not leave a
spend behind. The documented way to release without noise is not to call a mechanism (and so to
make no privacy claim for that release). The caller states the sensitivity; the mechanism cannot
check it (clip with :func:`~cotrain.privacy.clipping.clip_l2` first).
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from cotrain.privacy import parameters as check
from cotrain.privacy.clipping import tensors_of
from cotrain.privacy.parameters import PrivacyParameterError
from cotrain.runtime.spend import PrivacySpend

Value = torch.Tensor | Mapping[str, torch.Tensor]
Record = Callable[[PrivacySpend], None]
Sampler = Callable[[torch.Size, torch.Generator], torch.Tensor]


def _gaussian(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def _laplace(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    # Lap(1) = E1 - E2 with E = -log(1 - U), U ~ U[0, 1): finite for every draw (no log(0))
    u = torch.rand((2, *shape), generator=generator, dtype=torch.float64)
    return torch.log1p(-u[1]) - torch.log1p(-u[0])


def _release(value: Value, *, mechanism: str, sampler: Sampler, sensitivity: float, noise_multiplier: float,
             generator: torch.Generator, party: str, round: int, record: Record, sampling_rate: float,
             release: str) -> Value:
    """Validate, add ``scale * sampler(shape)`` to every tensor (in order), record one spend."""
    what = f"{mechanism} mechanism"
    sens = check.positive(sensitivity, f"{what}: sensitivity")
    sigma = check.positive(noise_multiplier, f"{what}: noise_multiplier")
    rate = check.sampling_rate(sampling_rate, f"{what}: sampling_rate")
    spend = PrivacySpend(round=check.round_number(round, f"{what}: round"), party=check.party(party, f"{what}: party"),
                         mechanism=mechanism, noise_multiplier=sigma, sensitivity=sens, sampling_rate=rate,
                         release=str(release))
    if not isinstance(generator, torch.Generator):
        raise PrivacyParameterError(f"{what}: generator must be a torch.Generator (a named stream of the root "
                                    f"seed), got {type(generator).__name__}")
    if not callable(record):
        raise PrivacyParameterError(f"{what}: record must be callable, got {type(record).__name__}")
    tensors_of(value, what)  # floating tensors only
    scale = sigma * sens

    def noised(t: torch.Tensor) -> torch.Tensor:
        noise = sampler(t.shape, generator).to(t.device) * scale
        return (t.detach().to(torch.float64) + noise).to(t.dtype)

    out: Value = noised(value) if isinstance(value, torch.Tensor) else {k: noised(t) for k, t in value.items()}
    record(spend)
    return out


def gaussian_mechanism(value: Value, *, sensitivity: float, noise_multiplier: float, generator: torch.Generator,
                       party: str, round: int, record: Record, sampling_rate: float = 1.0,
                       release: str = "") -> Value:
    """``value`` plus N(0, (noise_multiplier * sensitivity)^2) on every coordinate; records one spend.

    Args:
        value: a floating tensor, or a mapping of names to floating tensors (one release).
        sensitivity: the L2 sensitivity Delta_2 of ``value`` (> 0), stated by the caller.
        noise_multiplier: sigma (finite, > 0); the noise std is sigma * Delta_2.
        generator: where the noise is drawn from.
        party: whose data the release protects (the ledger checks it is the message's sender).
        round: the round the release belongs to.
        record: called once with the :class:`PrivacySpend` (e.g. ``spends.append``).
        sampling_rate: the probability that ``party``'s data took part (Poisson subsampling, as the
            adversary sees it); 1 when it always does.
        release: what is released (``"update"``, ``"aggregate"``, ``"votes"``).

    Returns:
        The noised value, same type, shapes and dtypes (noise added in float64).
    """
    return _release(value, mechanism="gaussian", sampler=_gaussian, sensitivity=sensitivity,
                    noise_multiplier=noise_multiplier, generator=generator, party=party, round=round,
                    record=record, sampling_rate=sampling_rate, release=release)


def laplace_mechanism(value: Value, *, sensitivity: float, noise_multiplier: float, generator: torch.Generator,
                      party: str, round: int, record: Record, release: str = "") -> Value:
    """``value`` plus Lap(b) on every coordinate, b = noise_multiplier * sensitivity; records one spend.

    ``sensitivity`` is the L1 sensitivity Delta_1; one release is (1 / noise_multiplier)-DP. The
    other arguments are those of :func:`gaussian_mechanism` (no subsampling: sampling rate 1).
    """
    return _release(value, mechanism="laplace", sampler=_laplace, sensitivity=sensitivity,
                    noise_multiplier=noise_multiplier, generator=generator, party=party, round=round,
                    record=record, sampling_rate=1.0, release=release)
