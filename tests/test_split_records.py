"""Split learning's typed records: each one survives its message, says what it carries, and refuses another kind."""

from __future__ import annotations

import pytest
import torch

from cotrain.runtime.message import PayloadKind
from cotrain.split.records import (Activations, BackwardDone, BeginInstruction, BeginReply, CutGradient, EndRequest,
                                   ForwardRequest, HeadReply, HeadRequest, SideUpload)

SIDE = {"front.0.weight": torch.arange(6.0).reshape(2, 3)}
A = torch.ones(4, 2, 3, 3)


@pytest.mark.parametrize("record", [
    BeginInstruction(SIDE, epoch=2, batch_size=8, lr=0.1, momentum=0.5, weight_decay=1e-4),
    BeginReply(num_batches=3, num_examples=20, seconds=0.25),
    ForwardRequest(epoch=2),
    Activations(A, torch.tensor([0, 1, 2, 3]), seconds=0.5),
    Activations(A, None),
    HeadRequest(A),
    HeadReply(A * 2, loss=1.5, seconds=0.1),
    CutGradient(A * 3),
    BackwardDone(seconds=0.2, loss=0.7),
    BackwardDone(seconds=0.2),
    SideUpload(SIDE, num_examples=20),
])
def test_record_round_trips_through_its_message(record):
    back = type(record).from_message(record.to_message())
    for name, value in vars(record).items():
        got = getattr(back, name)
        if isinstance(value, dict):
            assert got.keys() == value.keys() and all(torch.equal(got[k], value[k]) for k in value)
        elif isinstance(value, torch.Tensor):
            assert torch.equal(got, value)
        else:
            assert got == value


def test_labels_are_metered_as_labels_and_the_end_request_carries_nothing():
    m = Activations(A, torch.tensor([0, 1, 2, 3])).to_message()
    assert m.payload == PayloadKind.ACTIVATIONS and m.tensor_payloads == {"labels": PayloadKind.LABELS}
    assert "labels" not in Activations(A).to_message().tensors  # U-shaped: the labels stay with the agent
    end = EndRequest().to_message()
    assert not end.tensors and not end.values


def test_a_record_refuses_a_message_of_another_kind():
    with pytest.raises(ValueError, match="expected a 'split_end' message, got 'split_begin'"):
        SideUpload.from_message(BeginReply(1, 2).to_message())
