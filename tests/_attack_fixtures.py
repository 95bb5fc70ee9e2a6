"""Shared builders of the attack tests: a tiny FedAvg participant, a train request, updates."""

from __future__ import annotations

import torch

from cotrain.aggregation import flatten
from cotrain.behaviours import BehavingParticipant, Behaviour, BehaviourContext
from cotrain.data.base import ArrayDataset
from cotrain.federated import FedAvgParticipant, TrainInstruction, model_state
from cotrain.models import build_model
from cotrain.runtime.message import Message


def factory(norm: str = "none"):
    if norm == "none":
        return build_model("mlp", input_shape=(1, 8, 8), num_classes=3, hidden=[16], seed=11)
    return build_model("small_cnn", input_shape=(1, 8, 8), num_classes=3, width=4, norm=norm, seed=11)


def context(pid: str = "p0", seed: int = 3) -> BehaviourContext:
    return BehaviourContext(pid, seed, colluders=("p0", "p1"), num_participants=5)


def participant(data: ArrayDataset, pid: str = "p0", norm: str = "none") -> FedAvgParticipant:
    return FedAvgParticipant(pid, model_factory=lambda: factory(norm), train_data=data, seed=7)


def wrapped(attack: Behaviour, data: ArrayDataset, pid: str = "p0", norm: str = "none") -> BehavingParticipant:
    """``attack`` around a fresh participant (data hook applied; the wrapper binds it to the participant)."""
    ctx = context(pid)
    inner = participant(attack.on_data(data, ctx), pid, norm)
    return BehavingParticipant(inner, [attack], ctx)


def train_request(round: int = 1, upload: str = "parameters", norm: str = "none") -> Message:
    return TrainInstruction(parameters=model_state(factory(norm)), round=round, local_steps=3, batch_size=16,
                            lr=0.1, upload=upload).to_message()


def update(reply: Message, request: Message | None) -> torch.Tensor:
    """(d,) float64: reply minus request (parameters), or the reply (gradients)."""
    return flatten([reply.tensors], reference=None if request is None else request.tensors)[0][0]
