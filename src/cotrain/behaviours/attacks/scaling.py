"""Scaling (model replacement): upload the honest update boosted by a factor.

Reference: Bagdasaryan et al., "How to backdoor federated learning" (AISTATS 2020), Sec. 4.
With global model G, server learning rate eta and n participants averaged, an attacker that
wants the next global model to be X sends

    L = gamma (X - G) + G,     gamma = n / eta,

so that the mean replaces G by X when the honest updates roughly cancel. Here X is the model
the participant trained (``u = X - G`` its update) and the attack sends ``u' = gamma * u``:
``boost`` is gamma (the paper's choice for FedAvg's mean, eta = 1, is the number of participants
per round). Combined with a poisoned training set this is the paper's model replacement: the
``backdoor`` attack takes the same ``boost``.
"""

from __future__ import annotations

import torch

from cotrain.behaviours.attacks._updates import UpdateAttack, UpdateView, check_positive
from cotrain.behaviours.base import BehaviourContext, register_attack
from cotrain.runtime.message import Message


@register_attack("scaling")
class Scaling(UpdateAttack):
    """``u -> boost * u`` on every update reply.

    Args:
        boost: gamma > 0 (Bagdasaryan et al. use n / eta).
    """

    def __init__(self, *, boost: float = 10.0) -> None:
        super().__init__()
        self.boost = check_positive("boost", boost)

    def poison(self, view: UpdateView, request: Message, context: BehaviourContext) -> torch.Tensor:
        return self.boost * view.update
