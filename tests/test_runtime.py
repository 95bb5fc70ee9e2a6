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
    # the grid records every message down before delivery, every reply up on receipt
    assert [e.bytes for e in ledger.entries] == [88, 88, 48, 48]
    assert [e.value_bytes for e in ledger.entries][:2] == [len('{"n":1}')] * 2
    assert ledger.total_bytes(direction="down") == 176
    assert ledger.total_bytes(direction="up") == 96
    first = ledger.entries[0]
    assert (first.sender, first.receiver, first.round, first.payload) == (SERVER, "a", 7, "parameters")
    assert first.tensor_names == ("x", "i") and first.shapes == ((3, 4), (5,)) and first.dtypes == ("float32", "int64")
    assert ledger.bytes_by_round_and_payload() == {7: {"parameters": 176, "statistics": 96}}


def test_ledger_jsonl_round_trip(tmp_path):
    grid = InProcessGrid({"a": Echo("a")})
    grid.send_and_receive({"a": Message("double", tensors={"x": torch.zeros(2, dtype=torch.float16)}, values={"n": 0})}, round=1)
    grid.ledger.record_privacy(PrivacySpend(round=1, party="a", mechanism="gaussian", noise_multiplier=1.1,
                                            sensitivity=1.0, sampling_rate=0.1, count=3, release="update"))
    grid.ledger.write_jsonl(tmp_path / "ledger.jsonl")
    back = Ledger.read_jsonl(tmp_path / "ledger.jsonl")
    assert back.entries == grid.ledger.entries
    assert back.privacy == [PrivacySpend(round=1, party="a", mechanism="gaussian", noise_multiplier=1.1,
                                         sensitivity=1.0, sampling_rate=0.1, count=3, release="update")]
    assert back.total_bytes() == 4 + 4


def test_ledger_entry_json_equals_the_dataclass_reference():
    # Prepare: an entry with every field set away from its default
    import dataclasses
    import json

    from cotrain.runtime.ledger import LedgerEntry

    entry = LedgerEntry(round=3, sender="server", receiver="p1", kind="train", payload="parameters",
                        tensor_names=("w", "b"), shapes=((2, 3), (2,)), dtypes=("float32", "float32"), bytes=32,
                        value_bytes=17, tensor_payloads=("parameters", "labels"), tensor_bytes=(24, 8))
    # Execute: the hand-written encoding against dataclasses.asdict (the slow reference)
    fast = entry.to_json()
    slow = json.loads(json.dumps(dataclasses.asdict(entry)))
    # Assert: same keys (a new field must be added to to_json too) and values
    assert fast == slow and json.loads(json.dumps(fast)) == fast


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
    from cotrain.runtime.grid import ParticipantFailedError

    # the participant's failure reaches the server as a one-line error naming it (and is on the ledger)
    with pytest.raises(ParticipantFailedError, match="a failed: ValueError: .*cannot handle message kind 'nope'.*double"):
        grid.send_and_receive({"a": Message("nope")}, round=0)
    assert grid.ledger.failures[0]["participant"] == "a"
    grid.catch_failures = False  # debugging: the participant's own exception, with its traceback
    with pytest.raises(ValueError, match="cannot handle message kind 'nope'"):
        grid.send_and_receive({"a": Message("nope")}, round=0)
    with pytest.raises(KeyError, match="no participant 'z'"):
        grid.send_and_receive({"z": Message("double")}, round=0)


def test_message_rejects_non_tensors():
    with pytest.raises(TypeError, match="'w' is list"):
        Message("x", tensors={"w": [1, 2]})


def test_values_must_be_json_and_are_metered():
    # Prepare / Execute / Assert: a tensor, a set and an int key are refused, naming where they sit.
    with pytest.raises(TypeError, match="values.x is Tensor"):
        Message("m", values={"x": torch.ones(2)})
    with pytest.raises(TypeError, match="values.s is set"):
        Message("m", values={"s": {1, 2}})
    with pytest.raises(TypeError, match="dict key 1"):
        Message("m", values={"d": {1: 2}})
    m = Message("m", values={"a": [1, 2.5], "b": "xy"})
    assert m.value_bytes == len('{"a":[1,2.5],"b":"xy"}') == 22
    assert Message("m").value_bytes == 0


def test_values_are_deep_copied_between_parties():
    class Keeper(Participant):
        @handler("keep")
        def keep(self, m):
            m.values["nested"]["list"].append(99)  # must not reach the sender's dict
            return Message("keep", values={"nested": m.values["nested"]})

    sent = {"nested": {"list": [1]}}
    grid = InProcessGrid({"a": Keeper("a")})
    reply = grid.send_and_receive({"a": Message("keep", values=sent)}, round=1)["a"]
    assert sent == {"nested": {"list": [1]}}
    assert reply.values == {"nested": {"list": [1, 99]}}


def test_planted_raw_data_in_values_fails_the_no_raw_data_check():
    # Prepare: a participant that answers with a plain summary, and a leaky one that also
    # plants its 1x8x8 samples in the message values (no tensor at all).
    samples = torch.rand(3, 1, 8, 8)

    class Honest(Participant):
        @handler("train")
        def train(self, m):
            return Message("train", tensors={"w": torch.zeros(4)}, values={"num_examples": 3, "train_loss": 0.25},
                           payload=PayloadKind.PARAMETERS)

    class Leaky(Honest):
        @handler("train")
        def train(self, m):
            reply = super().train(m)
            return Message("train", tensors=reply.tensors, payload=reply.payload,
                           values={**reply.values, "metrics": {"x": samples.tolist()}})

    # Execute
    honest, leaky = InProcessGrid({"a": Honest("a")}), InProcessGrid({"a": Leaky("a")})
    honest.send_and_receive({"a": Message("train")}, round=1)
    leaky.send_and_receive({"a": Message("train")}, round=1)
    # Assert: the honest run passes; the planted samples are caught from the ledger's value bytes
    assert honest.ledger.raw_data_findings((1, 8, 8)) == []
    findings = leaky.ledger.raw_data_findings((1, 8, 8))
    assert len(findings) == 1 and "a->server train" in findings[0] and "bytes of values" in findings[0]
    # a raw sample sent as a tensor is caught by its shape
    grid = InProcessGrid({"a": Honest("a")})
    grid.send_and_receive({"a": Message("train", tensors={"x": samples})}, round=1)
    assert any("ends in a sample's shape" in f for f in grid.ledger.raw_data_findings((1, 8, 8)))


def test_grid_records_spends_carried_by_a_reply():
    spend = PrivacySpend(round=2, party="a", mechanism="gaussian", noise_multiplier=2.0, sensitivity=1.0)

    class Noisy(Participant):
        @handler("go")
        def go(self, m):
            return Message("go", spends=(spend,))

    grid = InProcessGrid({"a": Noisy("a")})
    grid.send_and_receive({"a": Message("go")}, round=2)
    assert grid.ledger.privacy == [spend] and grid.ledger.spends_of("a") == [spend]
