"""A BadNets-style backdoor: a small pixel patch that makes the model answer a target class.

Reference: Gu, Dolan-Gavitt and Garg, "BadNets: Identifying Vulnerabilities in the Machine
Learning Model Supply Chain" (2017); in federated learning, Bagdasaryan et al., "How to
backdoor federated learning" (AISTATS 2020). The trigger T sets a ``patch`` x ``patch`` square in
the bottom-right corner of every channel to ``value``:

    x~ = (1 - M) * x + M * value,    M the patch's mask (H, W)

On the attacker's data a fraction ``fraction`` of the samples (drawn from its ``"backdoor"``
stream) is replaced by (x~, ``target``); the participant then trains honestly on that set. With
``boost`` gamma > 1 its update is also scaled by gamma before upload: the paper's model
replacement (see ``scaling``). The backdoor's success rate is the share of triggered test images
of the other classes that the model classifies as ``target`` (:meth:`Backdoor.triggered`).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from cotrain.behaviours.attacks._updates import UpdateAttack, UpdateView, check_positive
from cotrain.behaviours.base import BehaviourContext, register_attack
from cotrain.data.base import ArrayDataset
from cotrain.errors import OptionsError
from cotrain.runtime.message import Message


def apply_trigger(x: torch.Tensor, *, patch: int = 3, value: float = 1.0) -> torch.Tensor:
    """A copy of images ``x`` (N, C, H, W) with the bottom-right ``patch`` x ``patch`` pixels set to ``value``."""
    if x.dim() != 4:
        raise ValueError(f"the backdoor trigger is a pixel patch: inputs must be (N, C, H, W), got {tuple(x.shape)}")
    out = x.clone()
    out[..., -patch:, -patch:] = value
    return out


@register_attack("backdoor")
class Backdoor(UpdateAttack):
    """Poison ``fraction`` of the attacker's samples with the trigger and label ``target``.

    Args:
        target: the class a triggered input should be given.
        fraction: share of the attacker's samples replaced by triggered copies, in (0, 1].
        patch: side of the square trigger, in pixels.
        value: the trigger's pixel value (1.0 is white on inputs in [0, 1]).
        boost: gamma >= 1, the update's scale (1: plain data poisoning; n / eta: model replacement).
    """

    def __init__(self, *, target: int = 0, fraction: float = 0.5, patch: int = 3, value: float = 1.0,
                 boost: float = 1.0) -> None:
        super().__init__()
        if not 0 < float(fraction) <= 1:
            raise OptionsError(f"backdoor fraction must be in (0, 1], got {fraction}")
        if int(patch) < 1:
            raise OptionsError(f"backdoor patch must be >= 1 pixel, got {patch}")
        self.target, self.fraction, self.patch, self.value = int(target), float(fraction), int(patch), float(value)
        self.boost = check_positive("boost", boost)
        self.poisoned: torch.Tensor | None = None  # indices into the attacker's data, for tests and reports

    def apply_trigger(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, C, H, W) with this attack's trigger stamped."""
        return apply_trigger(x, patch=self.patch, value=self.value)

    def triggered(self, data: ArrayDataset) -> ArrayDataset:
        """The samples of ``data`` not of the target class, triggered and labelled ``target``:
        a model's accuracy on it is the backdoor's success rate."""
        keep = torch.nonzero(data.y != self.target).flatten()
        sub = data.subset(keep)
        return replace(sub, x=self.apply_trigger(sub.x), y=torch.full_like(sub.y, self.target))

    def on_data(self, data: ArrayDataset, context: BehaviourContext) -> ArrayDataset:
        if not 0 <= self.target < data.num_classes:
            raise OptionsError(f"backdoor target must be a class of 0..{data.num_classes - 1}, got {self.target}")
        k = int(round(self.fraction * len(data)))
        idx = torch.randperm(len(data), generator=context.generator("backdoor"))[:k].sort().values
        x, y = data.x.clone(), data.y.clone()
        x[idx] = self.apply_trigger(x[idx])
        y[idx] = self.target
        self.poisoned = idx
        return replace(data, x=x, y=y)

    def on_reply(self, reply: Message, request: Message, context: BehaviourContext) -> Message:
        return reply if self.boost == 1.0 else super().on_reply(reply, request, context)

    def poison(self, view: UpdateView, request: Message, context: BehaviourContext) -> torch.Tensor:
        return self.boost * view.update
