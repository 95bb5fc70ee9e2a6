"""What parties exchange: a ``Message`` of named tensors and JSON values.

Parties never share Python objects. Server code reaches a participant only by sending it a
``Message`` and reading the reply, so every byte that leaves a party can be put on the ledger:
tensor bytes, and the encoded size of the values (``value_bytes``), which must be JSON values
(checked on construction) so that they have a size and nothing else can hide in them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch

from cotrain.runtime.spend import PrivacySpend

JSONValue = int | float | str | bool | None | list | dict


class PayloadKind(str, Enum):
    """What a message's tensors are, for the ledger and for the privacy report."""

    PARAMETERS = "parameters"
    GRADIENTS = "gradients"
    ACTIVATIONS = "activations"
    STATISTICS = "statistics"
    LABELS = "labels"
    NONE = "none"


def check_json_value(value: Any, where: str) -> None:
    """``TypeError`` naming ``where`` unless ``value`` is a JSON value (dict keys strings)."""
    if value is None or isinstance(value, (bool, str, int)):
        return
    if isinstance(value, float):
        return  # NaN and infinities travel as JSON's extensions (json.dumps(allow_nan=True))
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_json_value(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: dict key {k!r} is {type(k).__name__}, message values need str keys")
            check_json_value(v, f"{where}.{k}")
        return
    raise TypeError(f"{where} is {type(value).__name__}; message values must be JSON values "
                    "(numbers, strings, booleans, None, lists, dicts): send tensors as message tensors")


def encode_values(values: dict[str, Any]) -> str:
    """The wire form of a message's values (what Flower carries, what ``value_bytes`` counts)."""
    return json.dumps(values, allow_nan=True, sort_keys=True, separators=(",", ":"))


@dataclass
class Message:
    """One message between two parties.

    Attributes:
        kind: what the receiver should do (``"train"``, ``"evaluate"``, ``"forward"``, ...);
            participants dispatch on it.
        tensors: named tensors (e.g. parameter names of a model, or ``"activations"``).
        values: named JSON values: hyper-parameters, example counts, metrics.
        payload: what the tensors carry (``PayloadKind``); recorded on the ledger.
        tensor_payloads: a different kind for some tensors (split learning's ``labels`` beside the
            ``activations``), so the ledger counts each kind on its own.
        spends: the noised releases this message carries (recorded on the ledger with it).
    """

    kind: str
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    payload: PayloadKind = PayloadKind.NONE
    spends: tuple[PrivacySpend, ...] = ()
    tensor_payloads: dict[str, PayloadKind] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise ValueError("message kind must be a non-empty string")
        for name, t in self.tensors.items():
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"message tensor {name!r} is {type(t).__name__}, expected a torch.Tensor")
        if not isinstance(self.values, dict):
            raise TypeError(f"message values must be a dict, got {type(self.values).__name__}")
        check_json_value(self.values, f"message {self.kind!r} values")
        self.payload = PayloadKind(self.payload)
        unknown = set(self.tensor_payloads) - set(self.tensors)
        if unknown:
            raise ValueError(f"tensor_payloads names tensors the message lacks: {sorted(unknown)}")
        self.tensor_payloads = {k: PayloadKind(v) for k, v in self.tensor_payloads.items()}
        self.spends = tuple(self.spends)
        for s in self.spends:
            if not isinstance(s, PrivacySpend):
                raise TypeError(f"message spends must be PrivacySpend records, got {type(s).__name__}")

    @property
    def tensor_bytes(self) -> int:
        """Bytes of tensor data (element size times element count, summed)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def payload_of(self, name: str) -> PayloadKind:
        """What tensor ``name`` carries."""
        return self.tensor_payloads.get(name, self.payload)

    @property
    def value_bytes(self) -> int:
        """Bytes of the values' JSON encoding (UTF-8); 0 for no values."""
        return len(encode_values(self.values).encode()) if self.values else 0

    def detached(self) -> "Message":
        """A deep copy whose tensors are detached CPU clones: what would arrive over a wire."""
        return Message(
            kind=self.kind,
            tensors={k: v.detach().to("cpu").clone() for k, v in self.tensors.items()},
            values=copy.deepcopy(self.values),
            payload=self.payload,
            spends=self.spends,
            tensor_payloads=dict(self.tensor_payloads),
        )

