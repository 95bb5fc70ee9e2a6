"""Upload validation: every FedAvg upload is checked against the instruction it answers before it
reaches the aggregation rule. A bad upload is rejected with a one-line reason (in the round record
and on the ledger); the round goes on with the others.

Checked: the message kind, the size of its values (at most ``MAX_VALUE_BYTES``), the tensor names, shapes and dtypes (those of the global model the
server sent), finiteness, an optional L2 bound on the update, and the example count (a positive
integer, at most ``max_examples``) that weights the average.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

from cotrain.federated.records import TRAIN
from cotrain.runtime.message import Message


MAX_VALUE_BYTES = 65_536
"""The most encoded bytes an upload's values (counts, loss, metrics) may take: a FedAvg reply needs
a few hundred; more is a participant smuggling data past the tensor checks, or a bug."""


def upload_problem(reply: Message, reference: Mapping[str, torch.Tensor], *, upload: str,
                   max_examples: int | None = None, max_update_norm: float | None = None,
                   max_value_bytes: int = MAX_VALUE_BYTES) -> str | None:
    """Why ``reply`` cannot be aggregated, or None when it can.

    ``reference``: the tensors the server sent (parameter uploads must match them name for name;
    gradient uploads must match the trainable ones).
    """
    if reply.kind != TRAIN:
        return f"reply kind {reply.kind!r}, expected {TRAIN!r}"
    if reply.value_bytes > max_value_bytes:
        return f"its values take {reply.value_bytes:,} bytes, more than the {max_value_bytes:,} an upload may"
    v = reply.values
    if v.get("upload") != upload:
        return f"upload {v.get('upload')!r}, expected {upload!r}"
    n = v.get("num_examples")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        return f"num_examples {n!r} is not a positive integer"
    if max_examples is not None and n > max_examples:
        return f"num_examples {n} exceeds the cap {max_examples}"
    got = set(reply.tensors)
    if upload == "parameters":
        names = set(reference)
        bad = got != names
    else:  # gradients of the trainable tensors: a subset of the floating state (no buffers)
        names = got
        bad = not got or not got <= {k for k, t in reference.items() if t.is_floating_point()}
    if bad:
        missing, extra = sorted(set(reference) - got) if upload == "parameters" else [], sorted(got - set(reference))
        return f"tensor names differ (missing {missing[:3]}, unexpected {extra[:3]})"
    sq = 0.0
    for name in sorted(names):
        t, ref = reply.tensors[name], reference[name]
        if tuple(t.shape) != tuple(ref.shape):
            return f"tensor {name!r} has shape {tuple(t.shape)}, expected {tuple(ref.shape)}"
        if t.dtype != ref.dtype:
            return f"tensor {name!r} has dtype {t.dtype}, expected {ref.dtype}"
        if t.is_floating_point():
            if not bool(torch.isfinite(t).all()):
                return f"tensor {name!r} holds NaN or infinite values"
            delta = t.double() - ref.double() if upload == "parameters" else t.double()
            sq += float((delta * delta).sum())
    norm = math.sqrt(sq)
    if max_update_norm is not None and norm > max_update_norm:
        return f"update norm {norm:.4g} exceeds the bound {max_update_norm:g}"
    return None
