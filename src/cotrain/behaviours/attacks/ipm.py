"""IPM, inner-product manipulation: a small negative multiple of the benign mean.

Reference: Xie, Koyejo and Gupta, "Fall of Empires: Breaking Byzantine-tolerant SGD by Inner
Product Manipulation" (UAI 2019), Sec. 3. With mu the mean of the benign updates every attacker
sends

    u' = -epsilon * mu

so that the aggregate's inner product with the true update turns negative. Small epsilon (0.1)
keeps the malicious uploads inside the honest cloud and defeats median / Krum; large epsilon (100)
drags the mean. mu is estimated from ``honest_samples`` simulated honest updates (see ``_updates``),
not from the others' updates as in the paper. ByzFL's ``InnerProductManipulation(tau)`` is the same
map with tau = epsilon.
"""

from __future__ import annotations

import torch

from cotrain.behaviours.attacks._updates import BenignEstimateAttack, UpdateView, check_positive
from cotrain.behaviours.base import BehaviourContext, register_attack
from cotrain.runtime.message import Message


def ipm_update(benign: torch.Tensor, epsilon: float) -> torch.Tensor:
    """-epsilon * mean (d,) of benign updates (m, d)."""
    return -epsilon * benign.mean(0)


@register_attack("ipm")
class InnerProductManipulation(BenignEstimateAttack):
    """``u' = -epsilon * mean(benign)``.

    Args:
        epsilon: the factor, > 0 (the paper's settings: 0.1 and 100).
        honest_samples: m, updates the mean uses (the real one and m - 1 simulated).
    """

    def __init__(self, *, epsilon: float = 0.1, honest_samples: int = 4) -> None:
        super().__init__(honest_samples=honest_samples)
        self.epsilon = check_positive("epsilon", epsilon)

    def poison(self, view: UpdateView, request: Message, context: BehaviourContext) -> torch.Tensor:
        return ipm_update(self.honest_updates(view, request), self.epsilon)
