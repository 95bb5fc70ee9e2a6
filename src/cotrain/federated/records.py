"""Named, typed payloads of the FedAvg protocol, and their conversion to and from messages."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from cotrain.runtime.message import Message, PayloadKind

TRAIN = "train"
EVALUATE = "evaluate"


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every floating tensor of the state dict (parameters and float buffers), detached."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise KeyError(f"parameters missing from the message: {sorted(missing)[:5]}")
    model.load_state_dict(state, strict=True)


@dataclass
class TrainInstruction:
    """Server -> participant: the global model and how to train on it this round."""

    parameters: dict[str, torch.Tensor]
    round: int
    local_steps: int
    batch_size: int
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    upload: str = "parameters"  # or "gradient": FedSGD, the gradient of one mini-batch

    def to_message(self) -> Message:
        return Message(TRAIN, tensors=self.parameters, payload=PayloadKind.PARAMETERS, values={
            "round": self.round, "local_steps": self.local_steps, "batch_size": self.batch_size,
            "lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay, "upload": self.upload,
        })

    @classmethod
    def from_message(cls, m: Message) -> "TrainInstruction":
        v = m.values
        return cls(parameters=dict(m.tensors), round=int(v["round"]), local_steps=int(v["local_steps"]),
                   batch_size=int(v["batch_size"]), lr=float(v["lr"]), momentum=float(v.get("momentum", 0.0)),
                   weight_decay=float(v.get("weight_decay", 0.0)), upload=str(v.get("upload", "parameters")))


@dataclass
class TrainResult:
    """Participant -> server: new parameters (FedAvg) or one mini-batch gradient (FedSGD).

    ``batch_size`` is the upload's metadata the gradient audit reads; ``num_examples`` weights
    the average.
    """

    tensors: dict[str, torch.Tensor]
    kind: str  # "parameters" or "gradient"
    num_examples: int
    batch_size: int
    train_loss: float
    metrics: dict[str, float] = field(default_factory=dict)

    def to_message(self) -> Message:
        payload = PayloadKind.PARAMETERS if self.kind == "parameters" else PayloadKind.GRADIENTS
        return Message(TRAIN, tensors=self.tensors, payload=payload, values={
            "upload": self.kind, "num_examples": self.num_examples, "batch_size": self.batch_size,
            "train_loss": self.train_loss, "metrics": dict(self.metrics),
        })

    @classmethod
    def from_message(cls, m: Message) -> "TrainResult":
        v = m.values
        return cls(tensors=dict(m.tensors), kind=str(v["upload"]), num_examples=int(v["num_examples"]),
                   batch_size=int(v["batch_size"]), train_loss=float(v["train_loss"]),
                   metrics={k: float(x) for k, x in dict(v.get("metrics", {})).items()})
