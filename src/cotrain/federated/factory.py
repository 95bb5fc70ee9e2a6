"""A picklable builder of FedAvg participants (what the parallel runtime's workers build them from).

It holds plain data only, the training split, each participant's indices into it and the run's
behaviours, and imports nothing above ``federated``, so a worker process that unpickles it starts
without loading the experiment layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from cotrain.behaviours import BehaviourSpec, behave
from cotrain.data.base import ArrayDataset
from cotrain.federated.participant import FedAvgParticipant
from cotrain.models import build_model
from cotrain.runtime.grid import Participant


@dataclass
class FedAvgFactory:
    """``factory(i)``: participant ``ids[i]`` holding a copy of its own rows of ``train``, with its
    attack and defences applied. Its models start untrained: every round's message brings the weights."""

    ids: list[str]
    train: ArrayDataset
    parts: list[np.ndarray]
    model: str
    seed: int
    behaviours: BehaviourSpec = field(default_factory=BehaviourSpec)
    model_options: dict[str, Any] = field(default_factory=dict)

    def __call__(self, index: int) -> Participant:
        if not 0 <= index < len(self.parts):
            raise ValueError(f"participant index {index} out of range 0..{len(self.parts) - 1}")
        pid = self.ids[index]
        chosen, context = self.behaviours.for_participant(pid, seed=self.seed, num_participants=len(self.parts))
        models = partial(build_model, self.model, input_shape=self.train.input_shape,
                         num_classes=self.train.num_classes, **self.model_options)

        def build(local: ArrayDataset) -> Participant:
            return FedAvgParticipant(pid, model_factory=models, train_data=local, seed=self.seed)

        return behave(build, self.train.subset(self.parts[index]), chosen, context)
