"""Calibration: the smallest noise multiplier that reaches a target (epsilon, delta).

epsilon(sigma) of ``compositions`` releases of the (Poisson-subsampled) Gaussian mechanism is
decreasing in sigma, so the target is bracketed by doubling / halving from sigma = 1 and the
bracket is then bisected, each step asking the registered accountant. The answer is the upper end
of the final bracket, so ``epsilon(answer) <= epsilon`` always holds, and it is within ``rtol``
(relative) of the exact threshold.
"""

from __future__ import annotations

from cotrain.privacy import parameters as check
from cotrain.privacy.accountant import ACCOUNTANTS, account, dp_event
from cotrain.privacy.parameters import PrivacyParameterError

RTOL = 1e-4        # relative width of the final bracket
SIGMA_MIN = 0.05   # below it PLD's support explodes; a target that needs less noise is unusual
SIGMA_MAX = 1e6


def noise_multiplier_for(*, epsilon: float, delta: float, compositions: int = 1, sampling_rate: float = 1.0,
                         accountant: str = "pld") -> float:
    """sigma such that ``compositions`` Gaussian releases at ``sampling_rate`` are (epsilon, delta)-DP.

    Args:
        epsilon: target epsilon (> 0).
        delta: target delta, in (0, 1).
        compositions: number of releases (rounds in which the party's data may take part).
        sampling_rate: Poisson sampling probability of each release, in (0, 1].
        accountant: a registered accountant (``"pld"`` or ``"rdp"``).

    Returns:
        The smallest noise multiplier (within a relative ``RTOL``) whose epsilon does not exceed
        the target under ``accountant``.
    """
    eps = check.positive(epsilon, "epsilon")
    d = check.delta(delta)
    k = check.count(compositions, "compositions")
    q = check.sampling_rate(sampling_rate)
    ACCOUNTANTS.get(accountant)

    memo: dict[float, float] = {}

    def eps_at(sigma: float) -> float:
        if sigma not in memo:
            memo[sigma] = account(dp_event("gaussian", sigma, sampling_rate=q, count=k), delta=d,
                                  accountant=accountant)
        return memo[sigma]

    lo = hi = 1.0
    if eps_at(1.0) > eps:  # too little noise at 1: double until the target is met
        while eps_at(hi) > eps:
            lo, hi = hi, hi * 2
            if hi > SIGMA_MAX:
                raise PrivacyParameterError(f"epsilon {eps} at delta {d} needs a noise multiplier above {SIGMA_MAX:g}")
    else:  # enough noise at 1: halve until it is not
        while eps_at(lo) <= eps:
            hi, lo = lo, lo / 2
            if lo < SIGMA_MIN:
                raise PrivacyParameterError(f"epsilon {eps} at delta {d} is reached with noise multipliers below "
                                            f"{SIGMA_MIN}; such a weak guarantee is not calibrated here")
    while hi - lo > RTOL * hi:  # invariant: eps_at(lo) > eps >= eps_at(hi)
        mid = 0.5 * (lo + hi)
        if eps_at(mid) > eps:
            lo = mid
        else:
            hi = mid
    return hi
