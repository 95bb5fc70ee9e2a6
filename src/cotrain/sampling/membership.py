"""What the released noisy coverage scores still leak: a membership game (beyond the ECOS paper).

The client releases r = c + N(0, sigma^2 I), c in R^K its exact per-centroid counts. The game: the
attacker knows everything but one bit b, D_0 = D without the sample x and D_1 = D with it (exact
counts c_0, c_1); the client releases from D_b. The Neyman-Pearson optimal test is the likelihood
ratio, for the Gaussian

    log p(r | c_1) - log p(r | c_0) = (c_1 - c_0) . (r - (c_0 + c_1) / 2) / sigma^2,

guessing "member" when it is >= 0 (the balanced test; equal priors). With mu = ||c_1 - c_0||_2 / sigma
its advantage TPR - FPR is 2 Phi(mu / 2) - 1 exactly; ``membership_advantage`` estimates it over
seeded trials and reports it beside that value and beside the bound the (epsilon, delta) guarantee
allows: any test against an (epsilon, delta)-DP release has TPR <= e^eps FPR + delta and
1 - FPR <= e^eps (1 - TPR) + delta (Kairouz, Oh, Viswanath, ICML 2015, Thm. 2.1; the hypothesis-
testing view of Wasserman and Zhou 2010). Both tight at once gives the largest gap,
FPR = (1 - delta) / (e^eps + 1), TPR = e^eps FPR + delta, so

    TPR - FPR <= (e^eps - 1 + 2 delta) / (e^eps + 1)

(see also Humphries et al., "Investigating Membership Inference Attacks under Data Dependencies",
CSF 2023, on membership advantage under DP). The epsilon given is the accountant's for the release
(no formula for it here).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from cotrain.errors import ConfigError
from cotrain.seeding import torch_generator


@dataclass(frozen=True)
class MembershipResult:
    """Attacker's advantage in the membership game on one noisy release.

    Attributes:
        advantage: measured TPR - FPR of the likelihood-ratio test over the trials.
        tpr / fpr: measured rates (``trials`` releases from D_1 and ``trials`` from D_0).
        analytic_advantage: 2 Phi(||c_1 - c_0|| / (2 sigma)) - 1, the test's exact advantage.
        bound: (e^eps - 1 + 2 delta) / (e^eps + 1), the most any test can get under (eps, delta)-DP.
        epsilon / delta / sigma / trials: the inputs.
    """

    advantage: float
    tpr: float
    fpr: float
    analytic_advantage: float
    bound: float
    epsilon: float
    delta: float
    sigma: float
    trials: int

    def to_json(self) -> dict:
        return asdict(self)


def advantage_bound(*, epsilon: float, delta: float) -> float:
    """(e^eps - 1 + 2 delta) / (e^eps + 1), capped at 1; 1 for epsilon = inf."""
    if epsilon < 0 or not 0 <= delta <= 1:
        raise ConfigError(f"need epsilon >= 0 and delta in [0, 1], got {epsilon}, {delta}")
    if math.isinf(epsilon):
        return 1.0
    e = math.exp(min(epsilon, 700.0))
    return min(1.0, (e - 1.0 + 2.0 * delta) / (e + 1.0))


def membership_advantage(counts_without: torch.Tensor, counts_with: torch.Tensor, *, sigma: float,
                         epsilon: float, delta: float = 1e-5, trials: int = 10_000, seed: int) -> MembershipResult:
    """Play the game ``trials`` times per side with the release N(c_b, sigma^2 I); see the module
    docstring. ``counts_without`` / ``counts_with``: (K,) exact counts of D without / with x."""
    c0, c1 = counts_without.double().flatten(), counts_with.double().flatten()
    if c0.shape != c1.shape:
        raise ConfigError(f"count vectors differ in shape: {tuple(c0.shape)} vs {tuple(c1.shape)}")
    if not sigma > 0 or trials < 1:
        raise ConfigError(f"need sigma > 0 and trials >= 1, got {sigma}, {trials}")
    g = torch_generator(seed, "membership")
    diff, mid = c1 - c0, (c0 + c1) / 2
    hits = []
    for c in (c1, c0):
        releases = c + sigma * torch.randn(trials, len(c), generator=g, dtype=torch.float64)
        hits.append(float(((releases - mid) @ diff >= 0).double().mean()))
    tpr, fpr = hits
    mu = float(diff.norm()) / sigma
    analytic = math.erf(mu / (2 * math.sqrt(2.0)))  # 2 Phi(mu/2) - 1
    return MembershipResult(advantage=tpr - fpr, tpr=tpr, fpr=fpr, analytic_advantage=analytic,
                            bound=advantage_bound(epsilon=epsilon, delta=delta), epsilon=epsilon, delta=delta,
                            sigma=sigma, trials=trials)
