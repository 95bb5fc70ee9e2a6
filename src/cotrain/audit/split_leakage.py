"""What the centre learns from the cut-layer activations it receives.

The centre of split learning receives A = f_{k1} o .. o f_1(x), shape (B, *cut_shape), for every
training sample (the 2023 split-training paper sends them by design). It also holds the agent-side
weights (it relays them in sequential SL and averages them in SplitFed), so it can push auxiliary
labelled data (x_aux, a_aux) through the same front and fit an attribute classifier h on
A_aux = front(x_aux) flattened to (N_aux, q); applied to the received activations it predicts each
sample's attribute. The classifier is the gradient audit's
(:class:`cotrain.audit.attribute_inference.AttributeClassifier`, patent CN114287009A step 2).
Ground truth is held by the experiment for scoring only, never by the observer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cotrain.audit.attribute_inference import AttributeClassifier
from cotrain.split.agent import SplitAgent


@dataclass
class ActivationRecorder:
    """A centre-side observer that keeps the activations received in ``epoch`` (all epochs when None),
    per agent, in arrival order; shapes (B, *cut_shape) each. It stops after ``limit`` samples."""

    epoch: int | None = None
    limit: int | None = None
    received: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    count: int = 0

    def __call__(self, agent_id: str, epoch: int, activations: torch.Tensor) -> None:
        if self.epoch is not None and epoch != self.epoch:
            return
        if self.limit is not None and self.count >= self.limit:
            return
        self.received.setdefault(agent_id, []).append(activations.detach().clone())
        self.count += len(activations)

    def state_dict(self) -> dict:
        """What was received so far (for a run's checkpoint)."""
        return {"received": {k: list(v) for k, v in self.received.items()}, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.received = {k: list(v) for k, v in state["received"].items()}
        self.count = int(state["count"])

    def stacked(self, agent_id: str) -> torch.Tensor:
        """(N, *cut_shape): everything received from ``agent_id``."""
        return torch.cat(self.received[agent_id])


@torch.no_grad()
def front_activations(front: nn.Module, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """front(x) in chunks: (N, *input_shape) -> (N, *cut_shape)."""
    front.eval()
    out = torch.cat([front(x[s:s + batch_size]) for s in range(0, len(x), batch_size)])
    front.train()
    return out


def true_attribute(agent: SplitAgent, recorder: ActivationRecorder, attribute: str) -> torch.Tensor:
    """Scoring only: the attribute values (N,) of the samples whose activations the recorder holds
    for ``agent``, read from the indices the agent kept (they never left it)."""
    n_batches = len(recorder.received[agent.participant_id])
    first = len(agent.sent_indices) - agent.batches_per_epoch if recorder.epoch is not None else 0
    idx = torch.cat(agent.sent_indices[first:first + n_batches])
    data = agent.train_data
    values = data.y if attribute == "label" else data.attributes[attribute]
    return values[idx]


@dataclass(frozen=True)
class LeakageResult:
    """Attribute inference accuracy on the received activations, and the majority-class baseline."""

    attribute: str
    accuracy: float
    majority_baseline: float
    num_auxiliary: int
    num_observed: int

    def to_json(self) -> dict:
        return dict(self.__dict__)


def attribute_leakage(front: nn.Module, x_aux: torch.Tensor, attribute_aux: torch.Tensor,
                      observed: torch.Tensor, attribute_observed: torch.Tensor, *, attribute: str = "attribute",
                      seed: int = 0) -> LeakageResult:
    """Fit h on front(x_aux) (N_aux, *cut_shape) -> a_aux; score h on the observed activations.

    ``attribute_observed`` (N,) is ground truth for scoring; the baseline is the frequency of the
    auxiliary data's most common value among the observed samples (what guessing it would score).
    """
    clf = AttributeClassifier(seed=seed).fit(front_activations(front, x_aux), attribute_aux)
    predicted = clf.infer(observed).predictions
    truth = attribute_observed.cpu().numpy()
    majority = int(np.bincount(attribute_aux.cpu().numpy()).argmax())
    return LeakageResult(attribute=attribute, accuracy=float((predicted == truth).mean()),
                         majority_baseline=float((truth == majority).mean()), num_auxiliary=len(x_aux),
                         num_observed=len(observed))
