"""Sign flipping: upload minus the honest update.

Reference: the sign-flipping attack of Damaskinos et al., "Asynchronous Byzantine machine
learning" (ICML 2018) and Allen-Zhu et al. (ICLR 2021), as ByzFL's ``SignFlipping``: with ``u`` the
participant's honest update (``x_k - x_global``, or its gradient for FedSGD), it sends

    u' = -s * u        (s = ``scale``, 1 by default)

so its parameters are ``x_global - s (x_k - x_global)``. ByzFL's version flips the *mean* of the
honest updates (an omniscient attacker); this one flips its own, which needs no other party.
"""

from __future__ import annotations

import torch

from cotrain.behaviours.attacks._updates import UpdateAttack, UpdateView, check_positive
from cotrain.behaviours.base import BehaviourContext, register_attack
from cotrain.runtime.message import Message


@register_attack("sign_flip")
class SignFlip(UpdateAttack):
    """``u -> -scale * u`` on every update reply.

    Args:
        scale: s > 0, the length of the flipped update relative to the honest one.
    """

    def __init__(self, *, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = check_positive("scale", scale)

    def poison(self, view: UpdateView, request: Message, context: BehaviourContext) -> torch.Tensor:
        return -self.scale * view.update
