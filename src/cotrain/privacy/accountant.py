"""Accountants: a party's spends in, (epsilon, delta) out, computed by dp-accounting.

A spend becomes a dp-accounting event with its sensitivity normalised away (a spend's noise
multiplier is already relative to its own sensitivity):

* Gaussian: ``GaussianDpEvent(sigma)``; Laplace: ``LaplaceDpEvent(lambda)``;
* sampling rate q < 1: ``PoissonSampledDpEvent(q, event)`` (amplification by Poisson subsampling);
* ``count`` k > 1: ``SelfComposedDpEvent(event, k)``;

and a party's events are composed (``ComposedDpEvent``). Identical spends (same mechanism, noise
multiplier and rate) are merged into one self-composition first: composition is commutative, so
the answer is the same, and PLD self-composition is far cheaper than one composition per round.

Registered accountants (``ACCOUNTANTS``, a :class:`~cotrain.registry.Registry`):

* ``"pld"``: privacy loss distributions (Meiser & Mohammadi, CCS 2018; Koskela et al., AISTATS
  2020; Doroshenko et al., PETS 2022): tight (pessimistic, so still an upper bound) for Gaussian
  and Laplace compositions, with or without subsampling. The default.
* ``"rdp"``: Renyi DP (Mironov, CSF 2017; subsampled Gaussian: Mironov, Talwar & Zhang 2019): looser
  but fast for many subsampled Gaussian compositions; it has no Poisson-subsampled Laplace.

Both use add-or-remove-one adjacency. A new accountant is a factory returning a fresh
``dp_accounting.PrivacyAccountant``, registered with ``@register_accountant("name")``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Sequence

from cotrain.privacy import parameters as check
from cotrain.privacy.parameters import PrivacyParameterError
from cotrain.registry import Registry
from cotrain.runtime.spend import PrivacySpend

if TYPE_CHECKING:  # dp-accounting is imported when an account is computed, not with the package
    from dp_accounting import DpEvent, PrivacyAccountant

    from cotrain.runtime.ledger import Ledger

# PLD discretisation of the privacy loss: 1e-3 rather than dp-accounting's 1e-4 default. The
# estimate stays pessimistic (an upper bound) and is much faster; the tests check it against the
# 1e-4 answer (1e-4 relative) and the analytic Gaussian (1e-3 relative).
PLD_DISCRETIZATION = 1e-3

ACCOUNTANTS: Registry[Callable[[], "PrivacyAccountant"]] = Registry("accountant")


def register_accountant(name: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Decorator: ``@register_accountant("pld")`` on a function returning a fresh accountant."""
    return ACCOUNTANTS.register(name)


def _dp_accounting() -> Any:
    try:
        import dp_accounting
    except ImportError as err:  # pragma: no cover - installed with cotrain
        raise PrivacyParameterError("privacy accounting needs the dp-accounting package "
                                    "(pip install dp-accounting)") from err
    return dp_accounting


@register_accountant("pld")
def pld_accountant() -> "PrivacyAccountant":
    dpa = _dp_accounting()
    return dpa.pld.PLDAccountant(dpa.NeighboringRelation.ADD_OR_REMOVE_ONE,
                                 value_discretization_interval=PLD_DISCRETIZATION)


@register_accountant("rdp")
def rdp_accountant() -> "PrivacyAccountant":
    dpa = _dp_accounting()
    return dpa.rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.ADD_OR_REMOVE_ONE)


def dp_event(mechanism: str, noise_multiplier: float, *, sampling_rate: float = 1.0, count: int = 1) -> "DpEvent":
    """The dp-accounting event of ``count`` releases of one mechanism (sensitivity normalised to 1)."""
    dpa = _dp_accounting()
    base = {"gaussian": dpa.GaussianDpEvent, "laplace": dpa.LaplaceDpEvent}[mechanism](noise_multiplier)
    event = base if sampling_rate == 1.0 else dpa.PoissonSampledDpEvent(sampling_rate, base)
    return event if count == 1 else dpa.SelfComposedDpEvent(event, count)


SpendKey = tuple[str, float, float]  # (mechanism, noise multiplier, sampling rate)


def spend_counts(spends: Sequence[PrivacySpend]) -> dict[SpendKey, int]:
    """How many releases of each kind ``spends`` hold."""
    counts: dict[SpendKey, int] = {}
    for s in spends:
        if not isinstance(s, PrivacySpend):
            raise PrivacyParameterError(f"epsilon_of: expected PrivacySpend records, got {type(s).__name__}")
        key = (s.mechanism, float(s.noise_multiplier), float(s.sampling_rate))
        counts[key] = counts.get(key, 0) + s.count
    return counts


def spends_event(spends: Sequence[PrivacySpend]) -> "DpEvent":
    """One event composing every spend (identical spends merged into a self-composition), in a fixed
    order of kinds, so the answer does not depend on the order the spends were recorded in."""
    events = [dp_event(m, nm, sampling_rate=q, count=k) for (m, nm, q), k in sorted(spend_counts(spends).items())]
    return events[0] if len(events) == 1 else _dp_accounting().ComposedDpEvent(events)


def account(event: "DpEvent", *, delta: float, accountant: str) -> float:
    """epsilon at ``delta`` of ``event`` under the registered ``accountant``."""
    acc = ACCOUNTANTS.get(accountant)()
    if not acc.supports(event):
        raise PrivacyParameterError(f"accountant {accountant!r} cannot compose these releases "
                                    f"(e.g. a subsampled Laplace release needs 'pld')")
    eps = float(acc.compose(event).get_epsilon(delta))
    return eps if not math.isnan(eps) else math.inf


def epsilon_of(spends: Sequence[PrivacySpend], *, delta: float, accountant: str = "pld") -> float:
    """epsilon such that the composition of ``spends`` is (epsilon, delta)-DP.

    Args:
        spends: the releases, e.g. ``ledger.spends_of(party)``; each composed ``count`` times, with
            its sampling rate (Poisson-subsampled) and its noise multiplier.
        delta: the target delta, in (0, 1).
        accountant: a registered accountant, ``"pld"`` (default) or ``"rdp"``.

    Returns:
        epsilon (0.0 for no spends: nothing was released with a claim). ``inf`` when the
        accountant finds no finite bound.
    """
    d = check.delta(delta)
    ACCOUNTANTS.get(accountant)  # an unknown name fails before any work
    spends = list(spends)
    if not spends:
        return 0.0
    return account(spends_event(spends), delta=d, accountant=accountant)


def epsilon_by_party(ledger: "Ledger", *, delta: float, accountant: str = "pld") -> dict[str, float]:
    """party -> epsilon of its spends on ``ledger.privacy``, sorted by party (for ``summary.json``).

    Only parties that made a noised release appear: a party absent from the answer made no
    differential-privacy claim (which is not epsilon 0).
    """
    d = check.delta(delta)
    ACCOUNTANTS.get(accountant)
    parties = sorted({s.party for s in ledger.privacy})
    answers: dict[tuple, float] = {}  # parties with the same releases (same rounds taken part in) share one account
    out = {}
    for p in parties:
        spends = ledger.spends_of(p)
        key = tuple(sorted(spend_counts(spends).items()))
        if key not in answers:
            answers[key] = epsilon_of(spends, delta=d, accountant=accountant)
        out[p] = answers[key]
    return out
