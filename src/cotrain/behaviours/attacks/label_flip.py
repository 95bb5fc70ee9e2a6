"""Label flipping: train honestly on wrong labels.

Reference: Biggio, Nelson and Laskov, "Poisoning attacks against support vector machines"
(ICML 2012) for label poisoning; the federated form of Tolpegin et al., "Data Poisoning
Attacks Against Federated Learning Systems" (ESORICS 2020) and ByzFL's label flipping, which
maps every label y of C classes to

    y' = C - 1 - y

(``permutation`` replaces this map by any permutation pi of 0..C-1: y' = pi[y]). The hook runs
once on the participant's data; its updates are then honest training on the flipped set.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from cotrain.behaviours.base import Behaviour, BehaviourContext, register_attack
from cotrain.data.base import ArrayDataset
from cotrain.errors import OptionsError


@register_attack("label_flip")
class LabelFlip(Behaviour):
    """``y -> C - 1 - y`` (or ``y -> permutation[y]``) on every training label.

    Args:
        permutation: pi, a list holding each of 0..C-1 once; None: the reversal C - 1 - y.
    """

    def __init__(self, *, permutation: list[int] | None = None) -> None:
        self.permutation = None if permutation is None else [int(c) for c in permutation]

    def mapping(self, num_classes: int) -> torch.Tensor:
        """pi as an int64 tensor (C,)."""
        if self.permutation is None:
            return torch.arange(num_classes - 1, -1, -1)
        if sorted(self.permutation) != list(range(num_classes)):
            raise OptionsError(f"label_flip permutation must hold each of 0..{num_classes - 1} once, "
                               f"got {self.permutation}")
        return torch.tensor(self.permutation, dtype=torch.int64)

    def on_data(self, data: ArrayDataset, context: BehaviourContext) -> ArrayDataset:
        return replace(data, y=self.mapping(data.num_classes)[data.y])
