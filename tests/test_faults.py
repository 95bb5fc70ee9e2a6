"""Injected faults ([faults]), quorum retries and the in-process reply timeout.

Expected faults are worked out from the streams the module documents: participant ``pid`` asked
for the ``n``-th time in round ``r`` draws ``(drop, delay, corrupt)`` uniforms from
``numpy_rng(seed, "faults", pid, r, n)``, then (if corrupted) the kind.
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from cotrain.behaviours.faults import FaultPlan, FaultyParticipant, with_faults
from cotrain.cli import app
from cotrain.errors import ConfigError
from cotrain.experiment import config_from_dict, read_jsonl, resume_experiment, run_experiment
from cotrain.experiment.config import save_config, with_overrides
from cotrain.federated import FedAvgParticipant, FedAvgSettings, run_fedavg, sample_participants
from cotrain.federated.server import QuorumError
from cotrain.models import build_model
from cotrain.runtime import InProcessGrid
from cotrain.seeding import numpy_rng

SEED = 4


def _participants(ds, n=3):
    factory = lambda: build_model("mlp", input_shape=(1, 8, 8), num_classes=3, hidden=[16], seed=11)  # noqa: E731
    return {f"p{i}": FedAvgParticipant(f"p{i}", model_factory=factory, train_data=ds.subset(range(i, len(ds), n)),
                                       seed=SEED) for i in range(n)}


def _model():
    return build_model("mlp", input_shape=(1, 8, 8), num_classes=3, hidden=[16], seed=11)


def _draws(pid, rnd, n=0):
    return numpy_rng(SEED, "faults", pid, rnd, n).random(3)


def test_dropped_and_crashed_participants_are_failed_and_the_round_goes_on(tiny_dataset):
    # Prepare: 5 participants drop out with probability 0.4; p1 crashes from round 2 on
    parts = _participants(tiny_dataset, 5)
    plan = FaultPlan(drop=0.4, crash_round=2, crashed=("p1",))
    grid = InProcessGrid(with_faults(parts, plan, seed=SEED))
    # Execute
    history = run_fedavg(grid, _model(), FedAvgSettings(rounds=4, local_steps=1, batch_size=8), seed=SEED)
    # Assert: the drops are those of the stream, the crash holds from round 2, the others aggregate
    for rec in history:
        r = rec.round
        want = {p: f"InjectedFault: dropped out of round {r} (injected fault)" for p in parts if _draws(p, r)[0] < 0.4}
        if r >= 2:
            want["p1"] = "InjectedFault: crashed in round 2 (injected fault)"
        assert rec.failed == dict(sorted(want.items()))
        assert set(rec.aggregation["weights"]) == set(parts) - set(want)
        assert rec.rejected == {} and rec.retries == []
    assert sum(len(r.failed) for r in history) >= 5  # the plan did bite (3 crashes and at least 2 drops)
    assert grid.ledger.failures == [{"round": r.round, "participant": p, "reason": why}
                                    for r in history for p, why in r.failed.items()]
    for pid, p in parts.items():  # a crashed or dropped participant does not train
        assert p.rounds_participated == sum(pid in r.aggregation["weights"] for r in history)


def test_corrupt_uploads_are_rejected_with_the_validators_reason_and_never_reach_the_model(tiny_dataset):
    # Prepare: p2 corrupts every upload, its kind drawn per round; the same run without p2 is the reference
    kinds = ("nan", "shape", "examples")
    settings = FedAvgSettings(rounds=4, local_steps=2, batch_size=8, max_examples=1000)
    parts = _participants(tiny_dataset)
    parts["p2"] = FaultyParticipant(parts["p2"], FaultPlan(corrupt=1.0, corruptions=kinds), seed=SEED)
    model, clean = _model(), _model()
    reference = _participants(tiny_dataset)
    del reference["p2"]
    # Execute
    history = run_fedavg(InProcessGrid(parts), model, settings, seed=SEED)
    run_fedavg(InProcessGrid(reference), clean, settings, seed=SEED)
    # Assert: each round's reason is the validator's for the kind drawn; the model equals the run without p2
    reasons = {"nan": "holds NaN or infinite values", "shape": "has shape (1,), expected",
               "examples": "num_examples 1000000000000 exceeds the cap 1000"}
    drawn = []
    for rec in history:
        rng = numpy_rng(SEED, "faults", "p2", rec.round, 0)
        rng.random(3)
        drawn.append(kinds[int(rng.integers(3))])
        assert list(rec.rejected) == ["p2"] and reasons[drawn[-1]] in rec.rejected["p2"]
        assert set(rec.aggregation["weights"]) == {"p0", "p1"}
    assert len(set(drawn)) >= 2  # more than one kind was played
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), clean.state_dict().values()))


def test_a_round_below_quorum_is_retried_on_a_fresh_sample_until_it_reaches_it(tiny_dataset):
    # Prepare: p0 has crashed; 2 of 3 asked each round and both needed, so only the sample {p1, p2} succeeds
    parts = _participants(tiny_dataset)
    grid = InProcessGrid(with_faults(parts, FaultPlan(crash_round=1, crashed=("p0",)), seed=SEED))
    settings = FedAvgSettings(rounds=3, participants_per_round=2, min_participants=2, round_retries=6,
                              local_steps=1, batch_size=8)
    ids = sorted(parts)
    expected = []  # per round: the samples tried before {p1, p2}
    for r in range(1, 4):
        samples = [sample_participants(ids, settings, seed=SEED, round=r, attempt=a) for a in range(7)]
        expected.append(samples[:samples.index(["p1", "p2"])])
    assert any(expected)  # at least one round needed a retry
    # Execute
    history = run_fedavg(grid, _model(), settings, seed=SEED)
    # Assert: every round ended on {p1, p2}; the failed attempts are listed with p0's reason
    for rec, tried in zip(history, expected):
        assert rec.participants == ["p1", "p2"] and rec.failed == {}
        assert [a["participants"] for a in rec.retries] == tried
        assert all(a["failed"] == {"p0": "InjectedFault: crashed in round 1 (injected fault)"} for a in rec.retries)
    # without retries the first round whose sample holds p0 stops the run
    first = next(r for r in range(1, 4) if "p0" in sample_participants(ids, settings, seed=SEED, round=r))
    with pytest.raises(QuorumError, match=rf"^round {first}: 1 usable upload\(s\) of 2 asked for, fewer than "
                                          r"min_participants = 2 \(failed: p0: InjectedFault: crashed"):
        run_fedavg(InProcessGrid(with_faults(_participants(tiny_dataset), FaultPlan(crash_round=1, crashed=("p0",)),
                                             seed=SEED)),
                   _model(), FedAvgSettings(rounds=3, participants_per_round=2, min_participants=2, local_steps=1,
                                            batch_size=8), seed=SEED)


QUORUM = {"fedavg": {"rounds": 4, "local_steps": 2, "batch_size": 8, "min_participants": 3, "round_retries": 1},
          "faults": {"crash": ["participant-002"], "crash_round": 3}}


def _cfg(tmp_path, name, **sections):
    return config_from_dict({"run": {"name": name, "output_dir": str(tmp_path), "seed": 3, "threads": 1},
                             "data": {"participants": 3, "options": {"n_train": 90, "n_test": 40, "num_domains": 1}},
                             "model": {"options": {"width": 4}}, **sections})


def test_a_quorum_failure_stops_with_one_line_and_a_checkpoint_and_resume_then_completes(tmp_path):
    # Prepare: participant-002 crashes in round 3 and all 3 are needed; the same run without the crash
    cfg = _cfg(tmp_path, "quorum", **QUORUM)
    config = tmp_path / "quorum.toml"
    save_config(cfg, config)
    clean = run_experiment(_cfg(tmp_path, "clean", fedavg=QUORUM["fedavg"]))
    # Execute: the CLI run stops in round 3
    out = CliRunner().invoke(app, ["run", str(config), "--quiet"])
    run_dir = tmp_path / "quorum"
    # Assert: exit 1, one line naming the round, the retry, the crash, the kept checkpoint and the resume command
    lines = out.output.strip().splitlines()
    assert out.exit_code == 1 and len(lines) == 1, out.output
    assert lines[0].startswith("error: round 3: 2 usable upload(s) of 3 asked for, fewer than min_participants = 3, "
                               "after 1 retry (failed: participant-002: InjectedFault: crashed in round 3")
    assert lines[0].endswith(f"the checkpoint of round 2 is kept: once enough participants are back, resume with: "
                             f"cotrain run --resume {run_dir}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["resumable"] and summary["rounds_done"] == 2
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["round"] == 2
    # the participant is back (its crash taken out of the saved config): resume finishes, equal to the clean run
    save_config(with_overrides(cfg, {"faults.crash": [], "faults.crash_round": None}), run_dir / "config.toml")
    resumed = resume_experiment(run_dir)
    assert resumed.summary["status"] == "complete" and resumed.summary["resumed_after_rounds"] == [2]
    ma, mb = torch.load(run_dir / "model.pt"), torch.load(clean.run_dir / "model.pt")
    assert all(torch.equal(ma[k], mb[k]) for k in mb)
    timeless = lambda p: [{k: v for k, v in r.items() if k != "seconds"} for r in read_jsonl(p / "metrics.jsonl")]
    assert timeless(run_dir) == timeless(clean.run_dir)


def test_a_reply_later_than_the_round_timeout_is_failed(tiny_dataset):
    # Prepare: p1's reply is 2 s late; the limit is 1 s (the others take milliseconds: a wide margin on a loaded CI)
    parts = _participants(tiny_dataset)
    parts["p1"] = FaultyParticipant(parts["p1"], FaultPlan(delay=1.0, delay_s=2.0), seed=SEED)
    grid = InProcessGrid(parts)
    # Execute
    history = run_fedavg(grid, _model(), FedAvgSettings(rounds=1, local_steps=1, batch_size=8, round_timeout_s=1.0),
                         seed=SEED)
    # Assert: p1 failed as timed out (it did train: a straggler's work is done, its reply discarded)
    assert history[0].failed == {"p1": "timed out after 1 s"}
    assert set(history[0].aggregation["weights"]) == {"p0", "p2"}
    assert parts["p1"].rounds_participated == 1
    assert grid.ledger.failures == [{"round": 1, "participant": "p1", "reason": "timed out after 1 s"}]


def test_the_same_seed_plays_the_same_faults_and_another_seed_others(tmp_path):
    # Prepare: drops and corrupt uploads of every kind from [faults]
    faults = {"drop": 0.3, "corrupt": 0.3, "corruptions": ["nan", "shape", "examples"]}
    fedavg = {"rounds": 4, "local_steps": 1, "batch_size": 8, "max_examples": 1000, "round_retries": 3}
    data = {"participants": 5, "options": {"n_train": 100, "n_test": 20, "num_domains": 1}}
    # Execute
    runs = [run_experiment(config_from_dict({"run": {"name": n, "output_dir": str(tmp_path), "seed": s},
                                             "data": data, "model": {"options": {"width": 4}},
                                             "fedavg": fedavg, "faults": faults}))
            for n, s in (("a", 1), ("b", 1), ("c", 2))]
    # Assert: a and b fail and reject the same uploads for the same reasons and end equal; c differs
    faults_of = lambda run: [(r["failed"], r["rejected"], r.get("retries")) for r in run.history]
    assert faults_of(runs[0]) == faults_of(runs[1])
    assert sum(len(f) + len(j) for f, j, _ in faults_of(runs[0])) > 0
    assert faults_of(runs[0]) != faults_of(runs[2])
    ma, mb = (torch.load(r.run_dir / "model.pt") for r in runs[:2])
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    assert runs[0].summary["failed_replies"] + runs[0].summary["rejected_uploads"] == \
        sum(len(f) + len(j) for f, j, _ in faults_of(runs[0]))


@pytest.mark.parametrize("section, key", [
    ({"faults": {"drop": 1.5}}, "faults.drop"),
    ({"faults": {"crash_round": 2}}, "faults.crash_round"),
    ({"faults": {"crash": ["participant-009"], "crash_round": 2}}, "faults.crash"),
    ({"faults": {"corruptions": ["zeros"]}}, "faults.corruptions[0]"),
    ({"faults": {"delay": 0.5}}, "faults.delay_s"),
    ({"faults": {"drop": 0.1}, "method": {"name": "split"}}, "faults"),
    ({"faults": {"drop": 0.1}, "run": {"runtime": "flower-simulation"}}, "faults"),
    ({"fedavg": {"round_retries": -1}}, "fedavg.round_retries"),
    ({"fedavg": {"round_timeout_s": 0.0}}, "fedavg.round_timeout_s"),
    ({"fedavg": {"round_timeout_s": 5.0}, "run": {"runtime": "flower-simulation"}}, "fedavg.round_timeout_s"),
    ({"fedavg": {"min_participants": 3, "participants_per_round": 2}}, "fedavg.min_participants"),
])
def test_bad_fault_and_quorum_values_are_one_line_errors_naming_the_key(section, key):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"data": {"participants": 3}, **section})
    assert err.value.key == key and "\n" not in str(err.value) and str(err.value).startswith(key)
