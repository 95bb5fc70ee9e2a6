"""Message -> Flower records -> Message is exact; no processes are started."""

import math

import pytest
import torch

pytest.importorskip("flwr")

from flwr.app import ArrayRecord, ConfigRecord, RecordDict  # noqa: E402

from cotrain.runtime.flower.records import (META_KEY, TENSORS_KEY, flower_message_type,  # noqa: E402
                                            message_to_record_dict, record_dict_to_message, record_to_state,
                                            state_to_record)
from cotrain.runtime.message import Message, PayloadKind  # noqa: E402


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "blocks.0.weight": torch.randn(4, 3, 3, 3, generator=g),
        "blocks.0.bias": torch.randn(4, generator=g, dtype=torch.float64),
        "head.half": torch.randn(2, 5, generator=g).half(),
        "head.bf16": torch.randn(7, generator=g).to(torch.bfloat16),
        "indices": torch.randperm(10, generator=g),
        "mask": torch.tensor([True, False, True]),
        "counter": torch.tensor(3, dtype=torch.int32),
        "transposed": torch.arange(12.0).reshape(3, 4).t(),
        "empty": torch.zeros(0, 3),
        "bytes": torch.tensor([0, 255], dtype=torch.uint8),
    }


def _assert_same(a: Message, b: Message) -> None:
    assert b.kind == a.kind and b.payload == a.payload
    assert list(b.tensors) == list(a.tensors)
    for name, t in a.tensors.items():
        r = b.tensors[name]
        assert r.dtype == t.dtype and r.shape == t.shape, name
        assert torch.equal(r, t), name


@pytest.mark.parametrize("payload", list(PayloadKind))
def test_round_trip_is_exact(payload):
    values = {"round": 3, "lr": 0.1, "name": "p-001", "flag": True, "none": None, "list": [1, 2.5, "x"],
              "nested": {"a": {"b": [1]}}, "tiny": 1e-300, "big": 2**62}
    m = Message("train", tensors=_tensors(), values=values, payload=payload)
    back = record_dict_to_message(message_to_record_dict(m))
    _assert_same(m, back)
    assert back.values == values
    assert back.tensor_bytes == m.tensor_bytes


def test_non_finite_values_and_tensors_survive():
    m = Message("forward", tensors={"x": torch.tensor([math.nan, math.inf, -math.inf, -0.0])},
                values={"nan": math.nan, "inf": math.inf})
    back = record_dict_to_message(message_to_record_dict(m))
    assert math.isnan(back.values["nan"]) and back.values["inf"] == math.inf
    assert torch.equal(back.tensors["x"].isnan(), m.tensors["x"].isnan())
    assert torch.signbit(back.tensors["x"][3])


def test_message_without_tensors_and_record_layout():
    m = Message("evaluate", values={"accuracy": 0.5}, payload=PayloadKind.STATISTICS)
    content = message_to_record_dict(m)
    assert isinstance(content, RecordDict)
    assert isinstance(content[TENSORS_KEY], ArrayRecord) and len(content[TENSORS_KEY]) == 0
    assert isinstance(content[META_KEY], ConfigRecord) and content[META_KEY]["kind"] == "evaluate"
    _assert_same(m, record_dict_to_message(content))


def test_tensors_are_copies_and_gradients_dropped():
    w = torch.ones(3, requires_grad=True)
    back = record_dict_to_message(message_to_record_dict(Message("train", tensors={"w": w * 2})))
    assert not back.tensors["w"].requires_grad
    back.tensors["w"].add_(1)
    assert torch.equal(w, torch.ones(3))


def test_state_round_trip():
    state = {"rounds_participated": torch.tensor(4), "last_batch_indices": torch.tensor([5, 1, 9])}
    back = record_to_state(*state_to_record(state))
    assert list(back) == list(state) and all(torch.equal(back[k], state[k]) for k in state)
    assert record_to_state(*state_to_record({})) == {}


def test_flower_message_types():
    assert flower_message_type("train") == "train"
    assert flower_message_type("evaluate") == "evaluate"
    assert flower_message_type("forward") == "query"


def test_foreign_content_is_rejected():
    with pytest.raises(ValueError, match="not a cotrain message"):
        record_dict_to_message(RecordDict({"arrays": ArrayRecord()}))
