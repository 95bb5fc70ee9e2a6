"""Named, typed payloads of split learning, and their conversion to and from messages.

One record a direction of each exchange of :mod:`cotrain.split.messages` (shapes there); the centre
and the agents build and read only these, never a message's loose values. The values' keys are the
wire format (what the ledger meters as value bytes), so they stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cotrain.runtime.message import Message, PayloadKind
from cotrain.split.messages import BACKWARD, BEGIN, END, FORWARD, HEAD


def _expect(m: Message, kind: str) -> None:
    if m.kind != kind:
        raise ValueError(f"expected a {kind!r} message, got {m.kind!r}")


@dataclass
class BeginInstruction:
    """Centre -> agent: the agent side's weights and how to train this epoch (or turn)."""

    side: dict[str, torch.Tensor]
    epoch: int
    batch_size: int
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0

    def to_message(self) -> Message:
        return Message(BEGIN, tensors=self.side, payload=PayloadKind.PARAMETERS, values={
            "epoch": self.epoch, "batch_size": self.batch_size, "lr": self.lr, "momentum": self.momentum,
            "weight_decay": self.weight_decay})

    @classmethod
    def from_message(cls, m: Message) -> "BeginInstruction":
        _expect(m, BEGIN)
        v = m.values
        return cls(side=dict(m.tensors), epoch=int(v["epoch"]), batch_size=int(v["batch_size"]), lr=float(v["lr"]),
                   momentum=float(v["momentum"]), weight_decay=float(v["weight_decay"]))


@dataclass
class BeginReply:
    """Agent -> centre: how many mini-batches it will send this epoch, of how many examples."""

    num_batches: int
    num_examples: int
    seconds: float = 0.0

    def to_message(self) -> Message:
        return Message(BEGIN, values={"num_batches": self.num_batches, "num_examples": self.num_examples,
                                      "seconds": self.seconds})

    @classmethod
    def from_message(cls, m: Message) -> "BeginReply":
        _expect(m, BEGIN)
        v = m.values
        return cls(num_batches=int(v["num_batches"]), num_examples=int(v["num_examples"]),
                   seconds=float(v.get("seconds", 0.0)))


@dataclass
class ForwardRequest:
    """Centre -> agent: send the activations of your next mini-batch."""

    epoch: int

    def to_message(self) -> Message:
        return Message(FORWARD, values={"epoch": self.epoch})

    @classmethod
    def from_message(cls, m: Message) -> "ForwardRequest":
        _expect(m, FORWARD)
        return cls(epoch=int(m.values["epoch"]))


@dataclass
class Activations:
    """Agent -> centre: cut-layer activations (B, *cut_shape) and, unless U-shaped, labels (B,)."""

    activations: torch.Tensor
    labels: torch.Tensor | None = None
    seconds: float = 0.0

    def to_message(self) -> Message:
        tensors = {"activations": self.activations}
        kinds = {}
        if self.labels is not None:  # labels cross too, and the ledger counts them as what they are
            tensors["labels"] = self.labels
            kinds["labels"] = PayloadKind.LABELS
        return Message(FORWARD, tensors=tensors, payload=PayloadKind.ACTIVATIONS, tensor_payloads=kinds,
                       values={"seconds": self.seconds})

    @classmethod
    def from_message(cls, m: Message) -> "Activations":
        _expect(m, FORWARD)
        return cls(activations=m.tensors["activations"], labels=m.tensors.get("labels"),
                   seconds=float(m.values.get("seconds", 0.0)))


@dataclass
class HeadRequest:
    """U-shaped, centre -> agent: the middle's output (B, *cut2_shape) for the agent's tail and head."""

    activations: torch.Tensor

    def to_message(self) -> Message:
        return Message(HEAD, tensors={"activations": self.activations}, payload=PayloadKind.ACTIVATIONS)

    @classmethod
    def from_message(cls, m: Message) -> "HeadRequest":
        _expect(m, HEAD)
        return cls(activations=m.tensors["activations"])


@dataclass
class HeadReply:
    """U-shaped, agent -> centre: dL/d(middle output) (B, *cut2_shape) and the agent's loss."""

    gradient: torch.Tensor
    loss: float
    seconds: float = 0.0

    def to_message(self) -> Message:
        return Message(HEAD, tensors={"gradient": self.gradient}, payload=PayloadKind.GRADIENTS,
                       values={"loss": self.loss, "seconds": self.seconds})

    @classmethod
    def from_message(cls, m: Message) -> "HeadReply":
        _expect(m, HEAD)
        return cls(gradient=m.tensors["gradient"], loss=float(m.values["loss"]),
                   seconds=float(m.values.get("seconds", 0.0)))


@dataclass
class CutGradient:
    """Centre -> agent: dL/d(activations) (B, *cut_shape), to finish the agent's backward pass."""

    gradient: torch.Tensor

    def to_message(self) -> Message:
        return Message(BACKWARD, tensors={"gradient": self.gradient}, payload=PayloadKind.GRADIENTS)

    @classmethod
    def from_message(cls, m: Message) -> "CutGradient":
        _expect(m, BACKWARD)
        return cls(gradient=m.tensors["gradient"])


@dataclass
class BackwardDone:
    """Agent -> centre: the step is taken (U-shaped: with the agent's loss)."""

    seconds: float = 0.0
    loss: float | None = None

    def to_message(self) -> Message:
        values: dict = {"seconds": self.seconds}
        if self.loss is not None:
            values["loss"] = self.loss
        return Message(BACKWARD, values=values)

    @classmethod
    def from_message(cls, m: Message) -> "BackwardDone":
        _expect(m, BACKWARD)
        loss = m.values.get("loss")
        return cls(seconds=float(m.values.get("seconds", 0.0)), loss=None if loss is None else float(loss))


@dataclass
class EndRequest:
    """Centre -> agent: upload your side's weights (no tensors, no values)."""

    def to_message(self) -> Message:
        return Message(END)


@dataclass
class SideUpload:
    """Agent -> centre: the agent side's weights and its example count (the FedAvg weight n_k)."""

    side: dict[str, torch.Tensor]
    num_examples: int

    def to_message(self) -> Message:
        return Message(END, tensors=self.side, payload=PayloadKind.PARAMETERS,
                       values={"num_examples": self.num_examples})

    @classmethod
    def from_message(cls, m: Message) -> "SideUpload":
        _expect(m, END)
        return cls(side=dict(m.tensors), num_examples=int(m.values["num_examples"]))
