"""ALIE, "A little is enough": a small shift of every coordinate by the benign spread.

Reference: Baruch, Baruch and Goldberg, "A Little Is Enough: Circumventing Defenses for
Distributed Learning" (NeurIPS 2019), Sec. 4 and Algorithm 1. With n participants of which f
are malicious, the attackers need

    s = floor(n / 2 + 1) - f

honest participants on their side to form a majority; the largest shift that keeps them looking
closer to the mean than that many honest ones is

    z_max = Phi^{-1}((n - s) / n)

(Phi the standard normal CDF). Every attacker sends, coordinate-wise,

    u' = mu - z * sigma

with mu, sigma (d,) the mean and standard deviation (ddof = 1, as ByzFL) of the benign updates and
z = z_max unless ``z`` is given. ByzFL's ``ALittleIsEnough(tau)`` is mu + tau sigma, i.e. tau = -z.
mu and sigma are estimated from ``honest_samples`` simulated honest updates (see ``_updates``):
a weaker attacker than the paper's, which sees every honest update.
"""

from __future__ import annotations

import math

import torch
from scipy.stats import norm

from cotrain.behaviours.attacks._updates import BenignEstimateAttack, UpdateView
from cotrain.behaviours.base import BehaviourContext, register_attack
from cotrain.errors import ConfigError
from cotrain.runtime.message import Message


def alie_z(n: int, f: int) -> float:
    """Baruch et al.'s z_max = Phi^{-1}((n - s) / n), s = floor(n / 2 + 1) - f."""
    s = math.floor(n / 2 + 1) - f
    if not 0 < s < n:
        raise ConfigError(f"attack: ALIE's z is defined for 0 < s = floor(n/2 + 1) - f < n; n = {n}, f = {f} "
                          f"give s = {s} (set z explicitly)", key="attack")
    return float(norm.ppf((n - s) / n))


def alie_update(benign: torch.Tensor, z: float) -> torch.Tensor:
    """mu - z sigma (d,) of benign updates (m, d), sigma with ddof = 1."""
    return benign.mean(0) - z * benign.std(0, unbiased=True)


@register_attack("alie")
class ALittleIsEnough(BenignEstimateAttack):
    """``u' = mu - z sigma`` from the attacker's estimate of the benign updates.

    Args:
        z: the shift in standard deviations; None: Baruch et al.'s z_max from n = the federation's
            size and f = the number of colluders (the context's).
        honest_samples: m, updates the estimate uses (the real one and m - 1 simulated).
    """

    def __init__(self, *, z: float | None = None, honest_samples: int = 4) -> None:
        super().__init__(honest_samples=honest_samples)
        self.z = None if z is None else float(z)

    def z_for(self, context: BehaviourContext) -> float:
        return self.z if self.z is not None else alie_z(context.num_participants, len(context.colluders))

    def poison(self, view: UpdateView, request: Message, context: BehaviourContext) -> torch.Tensor:
        return alie_update(self.honest_updates(view, request), self.z_for(context))
