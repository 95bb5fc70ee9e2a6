"""FedAvg and FADA on Flower's engines equal their in-process runs: same parameters, accuracies and ledger.

Each test starts real Flower processes bound to 127.0.0.1 (a SuperLink, SuperNodes or Ray) through
the launcher, which stops all of them; the tests check that none is left.
"""

import json
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

pytest.importorskip("flwr")

sys.path.insert(0, str(Path(__file__).parent))

from _flower_helpers import assert_nothing_left, needs_ray  # noqa: E402

from cotrain.experiment.config import ExperimentConfig  # noqa: E402
from cotrain.runtime.flower.launch import (FlowerLaunchError, run_flower_deployment,  # noqa: E402
                                           run_flower_simulation, run_inprocess)

pytestmark = pytest.mark.flower


@pytest.fixture(scope="module")
def cfg() -> ExperimentConfig:
    """3 participants, 2 sampled per round, 3 rounds of a tiny MLP on tiny synthetic data."""
    return ExperimentConfig.model_validate({
        "run": {"seed": 7},
        "data": {"dataset": "synthetic", "participants": 3,
                 "options": {"n_train": 240, "n_test": 60, "size": 16, "num_classes": 4}},
        "model": {"name": "mlp", "options": {"hidden": [16]}},
        "fedavg": {"rounds": 3, "participants_per_round": 2, "local_steps": 4, "batch_size": 16, "lr": 0.2},
    })


FEDAVG = "cotrain.experiment.methods.fedavg:FLOWER_JOB"
FADA = "cotrain.experiment.methods.fada:FLOWER_JOB"


def _launch(launcher, cfg, job=FEDAVG, **kwargs):
    from cotrain.runtime.job import load_job

    d = cfg.model_dump_json()
    return launcher(d, job=job, num_participants=load_job(job).num_participants(d), **kwargs)


@pytest.fixture(scope="module")
def reference(cfg):
    return run_inprocess(cfg.model_dump_json(), job=FEDAVG)


def _assert_same_run(got, want) -> None:
    history, ledger, state = got
    ref_history, ref_ledger, ref_state = want
    # Global parameters.
    assert list(state) == list(ref_state)
    for name, t in ref_state.items():
        assert state[name].dtype == t.dtype and torch.allclose(state[name], t, atol=1e-5), name
    # Per-round records, keyed by cotrain participant id exactly as in process.
    assert [r["round"] for r in history] == [r["round"] for r in ref_history]
    for r, ref in zip(history, ref_history):
        assert r["participants"] == ref["participants"]
        assert r["test_accuracy"] == pytest.approx(ref["test_accuracy"], abs=1e-5)
        assert r["test_loss"] == pytest.approx(ref["test_loss"], abs=1e-5)
        assert (r["bytes_up"], r["bytes_down"]) == (ref["bytes_up"], ref["bytes_down"])
        for pid, m in ref["participant_metrics"].items():
            assert r["participant_metrics"][pid]["train_loss"] == pytest.approx(m["train_loss"], abs=1e-5)
    # The ledger: same bytes in total, per direction and round, and the same messages.
    assert ledger.total_bytes() == ref_ledger.total_bytes() > 0
    for direction in ("up", "down"):
        assert ledger.bytes_by_round(direction) == ref_ledger.bytes_by_round(direction)

    def rows(led):
        return Counter((e.round, e.sender, e.receiver, e.kind, e.payload, e.tensor_names, e.shapes, e.bytes)
                       for e in led.entries)

    assert rows(ledger) == rows(ref_ledger)


def _assert_nothing_left(workdir=None) -> None:
    assert_nothing_left(workdir)


@pytest.mark.slow
@pytest.mark.timeout(900)  # a process per message: minutes on a loaded 2-core machine
def test_deployment_engine_equals_in_process(cfg, reference, tmp_path):
    got = _launch(run_flower_deployment, cfg, workdir=tmp_path)
    _assert_nothing_left(tmp_path)
    _assert_same_run(got, reference)
    assert (tmp_path / "results" / "ledger.jsonl").exists()


@needs_ray
def test_simulation_engine_equals_in_process(cfg, reference, tmp_path):
    got = _launch(run_flower_simulation, cfg, workdir=tmp_path)
    _assert_nothing_left(tmp_path)
    _assert_same_run(got, reference)
    assert [r["round"] for r in reference[0]] == [1, 2, 3]
    assert len({tuple(r["participants"]) for r in reference[0]}) > 1, "sampling should vary across rounds"


@pytest.fixture(scope="module")
def fada_cfg() -> ExperimentConfig:
    """FADA, aggregator topology (the target is a Flower node too), 2 sources, a median rule."""
    return ExperimentConfig.model_validate({
        "run": {"seed": 3},
        "method": {"name": "fada"},
        "data": {"dataset": "synthetic", "participants": 2,
                 "options": {"n_train": 120, "n_test": 40, "size": 16, "num_classes": 3, "num_domains": 1}},
        "model": {"name": "small_cnn", "options": {"width": 4}},
        "aggregation": {"name": "median"},
        "fada": {"target_dataset": "synthetic", "target_options": {"n_train": 80, "n_test": 40, "size": 16,
                                                                    "num_classes": 3, "num_domains": 1, "seed": 9},
                 "topology": "aggregator", "rounds": 2, "pretrain_steps": 3, "disc_exchanges": 2,
                 "target_encoder_steps": 2, "batch_size": 16},
    })


@needs_ray
def test_fada_on_simulation_engine_equals_in_process(fada_cfg, tmp_path):
    want = run_inprocess(fada_cfg.model_dump_json(), job=FADA)
    got = _launch(run_flower_simulation, fada_cfg, job=FADA, workdir=tmp_path)
    _assert_nothing_left()
    _assert_same_run(got, want)
    assert {e.receiver for e in want[1].entries if e.direction == "down"} == {"participant-000", "participant-001",
                                                                              "target"}


def test_timeout_stops_every_process(cfg, tmp_path):
    with pytest.raises(FlowerLaunchError):
        _launch(run_flower_deployment, cfg, workdir=tmp_path, timeout_s=2)
    _assert_nothing_left(tmp_path)


@needs_ray
def test_audit_of_a_flower_run_gives_the_in_process_report(tmp_path):
    """The curious server runs inside the Flower ServerApp; its scored rows equal the in-process audit's."""
    from cotrain.experiment import run_experiment, with_overrides

    base = ExperimentConfig.model_validate({
        "run": {"seed": 2, "output_dir": str(tmp_path)},
        "data": {"dataset": "synthetic", "participants": 2, "max_train_samples": 200, "max_test_samples": 120,
                 "options": {"n_train": 200, "n_test": 120, "size": 16}},
        "model": {"name": "small_cnn", "options": {"width": 4}},
        "fedavg": {"rounds": 2, "upload": "gradient", "batch_size": 4, "server_lr": 0.1},
        "audit": {"enabled": True, "rounds": [2], "participants": ["participant-001"], "attribute": "thickness",
                  "aux_samples": 60, "steps": 5, "time_limit_s": 20.0},
    })
    local = run_experiment(with_overrides(base, {"run.name": "local"}))
    remote = run_experiment(with_overrides(base, {"run.name": "remote", "run.runtime": "flower-simulation"}))
    _assert_nothing_left()
    rows = lambda r: json.loads((r.run_dir / "audit.json").read_text())["results"]  # noqa: E731
    assert len(rows(local)) == 1 and rows(local)[0]["participant"] == "participant-001"
    for a, b in zip(rows(local), rows(remote), strict=True):
        assert set(a) == set(b)
        for k in a:
            assert b[k] == (pytest.approx(a[k], abs=1e-6) if isinstance(a[k], float) else a[k]), k
    assert remote.summary["audit_attribute_accuracy"] == pytest.approx(local.summary["audit_attribute_accuracy"])


@needs_ray
def test_an_attack_changes_the_same_participants_in_process_and_on_flower(cfg, reference, tmp_path):
    """The attack wrapper is applied where participants are built, which both runtimes call."""
    from cotrain.experiment.setup import participant_id, run_behaviours

    attacked = cfg.model_copy(update={"attack": cfg.attack.model_copy(update={"name": "sign_flip",
                                                                               "fraction": 0.34})})
    malicious = run_behaviours(attacked, 3).malicious
    assert len(malicious) == 1 and malicious[0] in [participant_id(i) for i in range(3)]
    want = run_inprocess(attacked.model_dump_json(), job=FEDAVG)
    got = _launch(run_flower_simulation, attacked, workdir=tmp_path)
    _assert_nothing_left()
    _assert_same_run(got, want)
    # and the attack did change the run: the final model differs from the clean run's
    assert any(not torch.allclose(want[2][k], reference[2][k]) for k in want[2])
