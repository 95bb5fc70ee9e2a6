"""Min-max: the furthest shift of the benign mean that stays as close to every benign update as
they are to each other.

Reference: Shejwalkar and Houmansadr, "Manipulating the Byzantine: Optimizing Model Poisoning
Attacks and Defenses for Federated Learning" (NDSS 2021), Sec. IV-B (AGR-agnostic Min-Max),
and their Algorithm 1 for gamma. With benign updates u_1..u_m, mu their mean and p a perturbation
direction (``"unit_vec"``: mu / ||mu||; ``"std"``: the coordinate-wise standard deviation;
``"sign"``: sign(mu)), the attacker sends

    u' = mu - gamma * p,   gamma = argmax_gamma  max_i ||u' - u_i||  <=  max_{i,j} ||u_i - u_j||

gamma is found as in the paper's code: start at ``gamma_init`` (10), step +/- half the last step
while the step exceeds ``tolerance`` (1e-5), keep the largest gamma that satisfied the bound.
The u_i are the attacker's ``honest_samples`` simulated honest updates (see ``_updates``), not
every honest update of the round as in the paper.
"""

from __future__ import annotations

import torch

from cotrain.behaviours.attacks._updates import BenignEstimateAttack, UpdateView, check_positive
from cotrain.behaviours.base import BehaviourContext, register_attack
from cotrain.errors import OptionsError
from cotrain.runtime.message import Message

DIRECTIONS = ("unit_vec", "std", "sign")


def perturbation(benign: torch.Tensor, direction: str) -> torch.Tensor:
    """p (d,) for benign updates (m, d)."""
    mu = benign.mean(0)
    if direction == "unit_vec":
        return mu / mu.norm().clamp_min(1e-30)
    if direction == "std":
        return benign.std(0, unbiased=True)
    return torch.sign(mu)


def min_max_gamma(benign: torch.Tensor, p: torch.Tensor, *, gamma_init: float, tolerance: float) -> float:
    """The largest gamma (to ``tolerance``) with max_i ||mu - gamma p - u_i|| <= max_{i,j} ||u_i - u_j||."""
    bound = torch.cdist(benign, benign).max()
    mu = benign.mean(0)
    gamma, step, best = gamma_init, gamma_init / 2, 0.0
    while True:
        ok = (benign - (mu - gamma * p)).norm(dim=1).max() <= bound
        if ok:
            best = gamma
        if step < tolerance:
            return best
        gamma = gamma + step if ok else gamma - step
        step /= 2


@register_attack("min_max")
class MinMax(BenignEstimateAttack):
    """``u' = mu - gamma p`` with the Min-Max gamma.

    Args:
        direction: p, one of ``"unit_vec"``, ``"std"``, ``"sign"``.
        gamma_init: the search's first gamma (the paper's 10); gamma stays below 2 * gamma_init.
        tolerance: the search stops when its step is below this.
        honest_samples: m, updates the statistics use (the real one and m - 1 simulated).
    """

    def __init__(self, *, direction: str = "unit_vec", gamma_init: float = 10.0, tolerance: float = 1e-5,
                 honest_samples: int = 4) -> None:
        super().__init__(honest_samples=honest_samples)
        if direction not in DIRECTIONS:
            raise OptionsError(f"min_max direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        self.direction = direction
        self.gamma_init = check_positive("gamma_init", gamma_init)
        self.tolerance = check_positive("tolerance", tolerance)
        self.last_gamma = float("nan")

    def poison(self, view: UpdateView, request: Message, context: BehaviourContext) -> torch.Tensor:
        benign = self.honest_updates(view, request)
        p = perturbation(benign, self.direction)
        self.last_gamma = min_max_gamma(benign, p, gamma_init=self.gamma_init, tolerance=self.tolerance)
        return benign.mean(0) - self.last_gamma * p
