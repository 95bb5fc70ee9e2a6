"""What parties exchange: a ``Message`` of named tensors and plain values.

Parties never share Python objects. Server code reaches a participant only by sending it a
``Message`` and reading the reply, so every byte that leaves a party can be put on the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch

PlainValue = int | float | str | bool | None | list | dict


class PayloadKind(str, Enum):
    """What a message's tensors are, for the ledger and for the privacy report."""

    PARAMETERS = "parameters"
    GRADIENTS = "gradients"
    ACTIVATIONS = "activations"
    STATISTICS = "statistics"
    LABELS = "labels"
    NONE = "none"


@dataclass
class Message:
    """One message between two parties.

    Attributes:
        kind: what the receiver should do (``"train"``, ``"evaluate"``, ``"forward"``, ...);
            participants dispatch on it.
        tensors: named tensors (e.g. parameter names of a model, or ``"activations"``).
        values: named plain values (ints, floats, strings, small lists): hyper-parameters,
            example counts, metrics.
        payload: what the tensors carry (``PayloadKind``); recorded on the ledger.
    """

    kind: str
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    payload: PayloadKind = PayloadKind.NONE

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise ValueError("message kind must be a non-empty string")
        for name, t in self.tensors.items():
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"message tensor {name!r} is {type(t).__name__}, expected a torch.Tensor")
        self.payload = PayloadKind(self.payload)

    @property
    def tensor_bytes(self) -> int:
        """Bytes of tensor data (element size times element count, summed)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def detached(self) -> "Message":
        """A copy whose tensors are detached CPU clones: what would arrive over a wire."""
        return Message(
            kind=self.kind,
            tensors={k: v.detach().to("cpu").clone() for k, v in self.tensors.items()},
            values=dict(self.values),
            payload=self.payload,
        )
