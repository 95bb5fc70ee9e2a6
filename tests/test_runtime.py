import pytest
import torch

from cotrain.runtime import SERVER, InProcessGrid, Ledger, Message, Participant, PayloadKind, PrivacySpend, handler


class Echo(Participant):
    @handler("double")
    def double(self, m: Message) -> Message:
        return Message("double", tensors={"y": m.tensors["x"] * 2}, payload=PayloadKind.STATISTICS,
                       values={"seen": m.values["n"]})


def test_ledger_counts_exact_bytes_both_directions():
    # Prepare: 3x4 float32 (48 bytes) + 5 int64 (40 bytes) down; 3x4 float32 back (48 bytes).
    grid = InProcessGrid({"a": Echo("a"), "b": Echo("b")})
    msg = Message("double", tensors={"x": torch.ones(3, 4), "i": torch.arange(5)}, values={"n": 1},
                  payload=PayloadKind.PARAMETERS)
    # Execute
    replies = grid.send_and_receive({"a": msg, "b": msg}, round=7)
    # Assert
    assert torch.equal(replies["a"].tensors["y"], torch.full((3, 4), 2.0))
    ledger = grid.ledger
    assert [e.bytes for e in ledger.entries] == [88, 48, 88, 48]
    assert ledger.total_bytes(direction="down") == 176
    assert ledger.total_bytes(direction="up") == 96
    first = ledger.entries[0]
    assert (first.sender, first.receiver, first.round, first.payload) == (SERVER, "a", 7, "parameters")
    assert first.tensor_names == ("x", "i") and first.shapes == ((3, 4), (5,)) and first.dtypes == ("float32", "int64")
    assert ledger.bytes_by_round_and_payload() == {7: {"parameters": 176, "statistics": 96}}


def test_ledger_jsonl_round_trip(tmp_path):
    grid = InProcessGrid({"a": Echo("a")})
    grid.send_and_receive({"a": Message("double", tensors={"x": torch.zeros(2, dtype=torch.float16)}, values={"n": 0})}, round=1)
    grid.ledger.record_privacy(PrivacySpend(round=1, party="a", mechanism="gaussian", epsilon=0.5, delta=1e-5))
    grid.ledger.write_jsonl(tmp_path / "ledger.jsonl")
    back = Ledger.read_jsonl(tmp_path / "ledger.jsonl")
    assert back.entries == grid.ledger.entries
    assert back.privacy == [PrivacySpend(round=1, party="a", mechanism="gaussian", epsilon=0.5, delta=1e-5)]
    assert back.total_bytes() == 4 + 4


def test_messages_are_copies_not_shared_objects():
    class Mutator(Participant):
        @handler("go")
        def go(self, m):
            m.tensors["x"].add_(100)  # must not reach the sender's tensor
            return Message("go", tensors={"x": m.tensors["x"]})

    x = torch.zeros(3)
    reply = InProcessGrid({"p": Mutator("p")}).send_and_receive({"p": Message("go", tensors={"x": x})}, round=0)
    assert torch.equal(x, torch.zeros(3))
    assert torch.equal(reply["p"].tensors["x"], torch.full((3,), 100.0))


def test_unknown_kind_and_participant_errors_are_clear():
    grid = InProcessGrid({"a": Echo("a")})
    with pytest.raises(ValueError, match="cannot handle message kind 'nope'.*double"):
        grid.send_and_receive({"a": Message("nope")}, round=0)
    with pytest.raises(KeyError, match="no participant 'z'"):
        grid.send_and_receive({"z": Message("double")}, round=0)


def test_message_rejects_non_tensors():
    with pytest.raises(TypeError, match="'w' is list"):
        Message("x", tensors={"w": [1, 2]})
