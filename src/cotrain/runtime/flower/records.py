"""Conversion between cotrain :class:`~cotrain.runtime.Message` and Flower records.

A cotrain message becomes a Flower ``RecordDict`` with two records:

* ``"cotrain.tensors"``: an ``ArrayRecord`` of the named tensors (NumPy serialisation, in order);
* ``"cotrain.meta"``: a ``ConfigRecord`` with the cotrain ``kind``, the ``payload`` kind, the
  plain ``values`` as one JSON string and each tensor's torch dtype (so dtypes NumPy lacks,
  such as ``bfloat16``, survive as a bit-identical view).

Plain values travel as JSON, so they must be JSON-representable (tuples arrive as lists,
dict keys as strings); floats, including NaN and infinities, round-trip exactly.
"""

from __future__ import annotations

import json
from typing import Mapping

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from cotrain.runtime.message import Message, PayloadKind
from cotrain.runtime.spend import PrivacySpend

TENSORS_KEY = "cotrain.tensors"
META_KEY = "cotrain.meta"
STATE_KEY = "cotrain.state"

# dtypes NumPy cannot hold: sent as a same-width integer view, restored bit for bit.
_VIEW_AS: dict[torch.dtype, torch.dtype] = {torch.bfloat16: torch.int16}
for _name, _view in (("float8_e4m3fn", torch.uint8), ("float8_e5m2", torch.uint8),
                     ("float8_e4m3fnuz", torch.uint8), ("float8_e5m2fnuz", torch.uint8)):
    if hasattr(torch, _name):
        _VIEW_AS[getattr(torch, _name)] = _view


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _torch_dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch dtype {name!r} in a Flower record")
    return dtype


def tensors_to_array_record(tensors: Mapping[str, torch.Tensor]) -> tuple[ArrayRecord, dict[str, str]]:
    """Named tensors -> (``ArrayRecord``, name -> torch dtype name)."""
    arrays: dict[str, Array] = {}
    dtypes: dict[str, str] = {}
    for name, t in tensors.items():
        t = t.detach().to("cpu")
        dtypes[name] = _dtype_name(t.dtype)
        if t.dtype in _VIEW_AS:
            t = t.contiguous().view(_VIEW_AS[t.dtype])
        arrays[name] = Array(t.resolve_conj().resolve_neg().contiguous().numpy())
    return ArrayRecord(arrays), dtypes


def array_record_to_tensors(record: ArrayRecord, dtypes: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`tensors_to_array_record`; tensors come back in ``dtypes`` order."""
    if set(record) != set(dtypes):
        raise ValueError(f"tensor names {sorted(record)} do not match their dtypes {sorted(dtypes)}")
    out: dict[str, torch.Tensor] = {}
    for name, dtype_name in dtypes.items():
        t = torch.from_numpy(record[name].numpy().copy())
        want = _torch_dtype(dtype_name)
        if t.dtype != want:
            t = t.view(want)
        out[name] = t
    return out


def message_to_record_dict(message: Message) -> RecordDict:
    """A cotrain message as Flower message content."""
    arrays, dtypes = tensors_to_array_record(message.tensors)
    meta = ConfigRecord({
        "kind": message.kind,
        "payload": message.payload.value,
        "values": json.dumps(message.values, allow_nan=True),
        "dtypes": json.dumps(dtypes),
        "spends": json.dumps([sp.to_json() for sp in message.spends]),
        "tensor_payloads": json.dumps({k: v.value for k, v in message.tensor_payloads.items()}),
    })
    return RecordDict({TENSORS_KEY: arrays, META_KEY: meta})


def record_dict_to_message(content: RecordDict) -> Message:
    """The cotrain message carried by Flower message content."""
    if META_KEY not in content or TENSORS_KEY not in content:
        raise ValueError(f"not a cotrain message: records {sorted(content)}; expected {META_KEY!r} and {TENSORS_KEY!r}")
    meta = content[META_KEY]
    dtypes = json.loads(str(meta["dtypes"]))
    return Message(
        kind=str(meta["kind"]),
        tensors=array_record_to_tensors(content[TENSORS_KEY], dtypes),
        values=json.loads(str(meta["values"])),
        payload=PayloadKind(str(meta["payload"])),
        spends=tuple(PrivacySpend.from_json(d) for d in json.loads(str(meta.get("spends", "[]")))),
        tensor_payloads={k: PayloadKind(v) for k, v in json.loads(str(meta.get("tensor_payloads", "{}"))).items()},
    )


def flower_message_type(kind: str) -> str:
    """The Flower message type a cotrain kind travels as.

    ``train`` and ``evaluate`` keep Flower's categories; every other kind is a ``query``.
    The exact cotrain kind is always read from the ``cotrain.meta`` record, not from here.
    """
    return kind if kind in ("train", "evaluate") else "query"


def state_to_record(state: Mapping[str, torch.Tensor]) -> tuple[ArrayRecord, ConfigRecord]:
    """A participant's kept state as records for Flower's ``context.state``."""
    arrays, dtypes = tensors_to_array_record(state)
    return arrays, ConfigRecord({"dtypes": json.dumps(dtypes)})


def record_to_state(arrays: ArrayRecord, meta: ConfigRecord) -> dict[str, torch.Tensor]:
    """Inverse of :func:`state_to_record`."""
    return array_record_to_tensors(arrays, json.loads(str(meta["dtypes"])))
