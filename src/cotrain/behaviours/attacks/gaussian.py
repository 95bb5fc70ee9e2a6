"""Gaussian noise: upload random parameters around the global model, or a noised update.

Reference: the Gaussian attack of Xie, Koyejo and Gupta, "Generalized Byzantine-tolerant SGD"
(2018) and ByzFL's ``Gaussian`` (a vector drawn from N(mu, sigma^2 I)). With ``u`` the honest
update (d,) and ``xi ~ N(0, sigma^2 I_d)`` drawn from the stream ``("gaussian", round)`` of the
participant:

* ``mode = "replace"``: ``u' = xi``, i.e. parameters ``x_global + xi`` (ByzFL's attack with mu = 0);
* ``mode = "add"``: ``u' = u + xi`` (the honest update, noised).
"""

from __future__ import annotations

import torch

from cotrain.behaviours.attacks._updates import UpdateAttack, UpdateView, check_positive
from cotrain.behaviours.base import BehaviourContext, register_attack
from cotrain.errors import OptionsError
from cotrain.runtime.message import Message

MODES = ("replace", "add")


@register_attack("gaussian")
class Gaussian(UpdateAttack):
    """Random updates of standard deviation ``sigma`` per coordinate.

    Args:
        sigma: noise standard deviation per coordinate, > 0.
        mode: ``"replace"`` (update = noise) or ``"add"`` (update + noise).
    """

    def __init__(self, *, sigma: float = 1.0, mode: str = "replace") -> None:
        super().__init__()
        self.sigma = check_positive("sigma", sigma)
        if mode not in MODES:
            raise OptionsError(f"gaussian mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode

    def poison(self, view: UpdateView, request: Message, context: BehaviourContext) -> torch.Tensor:
        gen = context.generator("gaussian", view.round)
        noise = self.sigma * torch.randn(view.update.shape, generator=gen, dtype=torch.float64)
        return noise if self.mode == "replace" else view.update + noise
