"""The ledger: one entry for every message that leaves a party.

Communication cost, the proof that raw data never crossed, and the privacy budget spent are all
read from here rather than from the protocol code's own bookkeeping.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from cotrain.runtime.message import Message
from cotrain.runtime.spend import PrivacySpend

SERVER = "server"


@dataclass(frozen=True)
class LedgerEntry:
    """One message as it left its sender."""

    round: int
    sender: str
    receiver: str
    kind: str
    payload: str
    tensor_names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    bytes: int
    value_bytes: int = 0
    tensor_payloads: tuple[str, ...] = ()  # per tensor, when any differs from ``payload``
    tensor_bytes: tuple[int, ...] = ()

    def bytes_by_payload(self) -> dict[str, int]:
        """Tensor bytes of this message by what they carry."""
        if not self.tensor_payloads:
            return {self.payload: self.bytes} if self.bytes or not self.tensor_names else {self.payload: 0}
        out: dict[str, int] = {}
        for kind, n in zip(self.tensor_payloads, self.tensor_bytes):
            out[kind] = out.get(kind, 0) + n
        return out

    @property
    def direction(self) -> str:
        """``"down"`` (server to participant), ``"up"`` (participant to server) or ``"peer"``."""
        if self.sender == SERVER:
            return "down"
        if self.receiver == SERVER:
            return "up"
        return "peer"

    def to_json(self) -> dict:
        # by hand, not dataclasses.asdict: asdict deep-copies field by field, and this runs for every
        # message (2,000 a round at 1,000 participants)
        return {"round": self.round, "sender": self.sender, "receiver": self.receiver, "kind": self.kind,
                "payload": self.payload, "tensor_names": list(self.tensor_names),
                "shapes": [list(s) for s in self.shapes], "dtypes": list(self.dtypes), "bytes": self.bytes,
                "value_bytes": self.value_bytes, "tensor_payloads": list(self.tensor_payloads),
                "tensor_bytes": list(self.tensor_bytes)}


@dataclass
class Ledger:
    """Append-only record of messages and noised releases."""

    entries: list[LedgerEntry] = field(default_factory=list)
    privacy: list[PrivacySpend] = field(default_factory=list)
    rejections: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)

    def record(self, message: Message, *, sender: str, receiver: str, round: int) -> LedgerEntry:
        entry = LedgerEntry(
            round=int(round),
            sender=str(sender),
            receiver=str(receiver),
            kind=message.kind,
            payload=message.payload.value,
            tensor_names=tuple(message.tensors),
            shapes=tuple(tuple(int(s) for s in t.shape) for t in message.tensors.values()),
            dtypes=tuple(str(t.dtype).replace("torch.", "") for t in message.tensors.values()),
            bytes=message.tensor_bytes,
            value_bytes=message.value_bytes,
            **_per_tensor(message),
        )
        self.entries.append(entry)
        for spend in message.spends:  # a noised release is on the ledger with the message that carries it
            if spend.party != entry.sender:
                raise ValueError(f"message from {entry.sender!r} carries a privacy spend of {spend.party!r}")
            self.record_privacy(spend)
        return entry

    def record_rejection(self, *, round: int, participant: str, reason: str) -> None:
        """An upload the server received (it is on the ledger) but did not use, and why."""
        self.rejections.append({"round": int(round), "participant": str(participant), "reason": str(reason)})

    def record_failure(self, *, round: int, participant: str, reason: str) -> None:
        """A participant that was sent a message and gave no reply (its message down is on the ledger)."""
        self.failures.append({"round": int(round), "participant": str(participant), "reason": str(reason)})

    def record_privacy(self, spend: PrivacySpend) -> None:
        if not isinstance(spend, PrivacySpend):
            raise TypeError(f"expected a PrivacySpend, got {type(spend).__name__}")
        self.privacy.append(spend)

    # -- queries -------------------------------------------------------------------------
    def total_bytes(self, *, direction: str | None = None, round: int | None = None,
                    payload: str | None = None) -> int:
        """Tensor bytes (the closed-form communication cost counts these), of one payload kind if given."""
        if payload is None:
            return sum(e.bytes for e in self._select(direction, round, None))
        return sum(e.bytes_by_payload().get(payload, 0) for e in self._select(direction, round, None))

    def bytes_by_payload(self) -> dict[str, int]:
        """Tensor bytes of the whole run by what they carry."""
        out: dict[str, int] = defaultdict(int)
        for e in self.entries:
            for kind, n in e.bytes_by_payload().items():
                out[kind] += n
        return dict(out)

    def total_value_bytes(self, *, direction: str | None = None, round: int | None = None) -> int:
        """Bytes of the messages' JSON values, kept apart from tensor bytes."""
        return sum(e.value_bytes for e in self._select(direction, round, None))

    def spends_of(self, party: str) -> list[PrivacySpend]:
        """Every noised release of ``party``, in order."""
        return [p for p in self.privacy if p.party == party]

    def bytes_by_round(self, direction: str | None = None) -> dict[int, int]:
        out: dict[int, int] = defaultdict(int)
        for e in self._select(direction, None, None):
            out[e.round] += e.bytes
        return dict(sorted(out.items()))

    def bytes_by_round_and_payload(self) -> dict[int, dict[str, int]]:
        out: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for e in self.entries:
            for kind, n in e.bytes_by_payload().items():
                out[e.round][kind] += n
        return {r: dict(v) for r, v in sorted(out.items())}

    def _select(self, direction: str | None, round: int | None, payload: str | None) -> Iterable[LedgerEntry]:
        for e in self.entries:
            if direction is not None and e.direction != direction:
                continue
            if round is not None and e.round != round:
                continue
            if payload is not None and e.payload != payload:
                continue
            yield e

    def raw_data_findings(self, sample_shape: tuple[int, ...], *, min_value_bytes: int = 1024) -> list[str]:
        """Messages that could carry raw samples of ``sample_shape``, one line each (empty: none).

        Two checks, from the ledger alone: a tensor whose trailing dimensions are a sample's
        shape, and values whose encoded size could hold one sample (at least two bytes an element,
        the shortest JSON number and its comma, and at least ``min_value_bytes``: plain metadata
        such as example counts and losses stays far below). What a protocol's messages legitimately
        carry (parameters, activations at a cut, noisy scores) passes both.
        """
        shape = tuple(int(s) for s in sample_shape)
        numel = 1
        for s in shape:
            numel *= s
        limit = max(2 * numel, int(min_value_bytes))
        found = []
        for e in self.entries:
            for name, sh in zip(e.tensor_names, e.shapes):
                if len(sh) >= len(shape) and tuple(sh[len(sh) - len(shape):]) == shape:
                    found.append(f"round {e.round} {e.sender}->{e.receiver} {e.kind}: tensor {name!r} shaped "
                                 f"{tuple(sh)} ends in a sample's shape {shape}")
            if e.value_bytes >= limit:
                found.append(f"round {e.round} {e.sender}->{e.receiver} {e.kind}: {e.value_bytes} bytes of values, "
                             f"enough for a sample of {numel} elements")
        return found

    # -- files ---------------------------------------------------------------------------
    def write_jsonl(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for e in self.entries:
                f.write(json.dumps(e.to_json()) + "\n")
            for p in self.privacy:
                f.write(json.dumps({"privacy": p.to_json()}) + "\n")
            for r in self.rejections:
                f.write(json.dumps({"rejected": r}) + "\n")
            for r in self.failures:
                f.write(json.dumps({"failed": r}) + "\n")

    @classmethod
    def read_jsonl(cls, path: str | Path) -> "Ledger":
        ledger = cls()
        with open(path, encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                if "privacy" in d:
                    ledger.privacy.append(PrivacySpend.from_json(d["privacy"]))
                    continue
                if "rejected" in d:
                    ledger.rejections.append(dict(d["rejected"]))
                    continue
                if "failed" in d:
                    ledger.failures.append(dict(d["failed"]))
                    continue
                ledger.entries.append(LedgerEntry(
                    round=d["round"], sender=d["sender"], receiver=d["receiver"], kind=d["kind"],
                    payload=d["payload"], tensor_names=tuple(d["tensor_names"]),
                    shapes=tuple(tuple(s) for s in d["shapes"]), dtypes=tuple(d["dtypes"]),
                    bytes=d["bytes"], value_bytes=d.get("value_bytes", 0),
                    tensor_payloads=tuple(d.get("tensor_payloads", ())), tensor_bytes=tuple(d.get("tensor_bytes", ())),
                ))
        return ledger


def _per_tensor(message: Message) -> dict:
    if not message.tensor_payloads:
        return {}
    return {"tensor_payloads": tuple(message.payload_of(n).value for n in message.tensors),
            "tensor_bytes": tuple(t.numel() * t.element_size() for t in message.tensors.values())}
