"""Split learning (SplitFed) on Flower: the centre is the ServerApp, each agent a ClientApp rebuilt
per message, which recomputes its pending front pass at BACKWARD. The run must be the in-process run:
the same epochs, model, ledger and leakage report."""

from __future__ import annotations

import json

import pytest
import torch

from _flower_helpers import needs_ray
from cotrain.experiment import run_experiment, with_overrides
from cotrain.experiment.config import ExperimentConfig

pytestmark = pytest.mark.flower


def _config(tmp_path, *, seed, split, **sections):
    """3 agents of 40 samples, 3 mini-batches of 16 an epoch, 2 epochs, the cut after conv1."""
    return ExperimentConfig.model_validate({
        "run": {"seed": seed, "output_dir": str(tmp_path)},
        "data": {"dataset": "synthetic", "participants": 3, "max_train_samples": 120, "max_test_samples": 60},
        "model": {"name": "small_cnn", "options": {"width": 4}},
        "method": {"name": "split"},
        "split": {"cut": "conv1", "epochs": 2, "batch_size": 16, **split},
        **sections,
    })


@needs_ray
def test_splitfed_on_flower_simulation_equals_in_process(tmp_path):
    # Prepare: SplitFed v1 with momentum and the leakage measurement on
    base = _config(tmp_path, seed=4, split={"variant": "sflv1", "momentum": 0.5, "leakage_samples": 40})

    # Execute
    local = run_experiment(with_overrides(base, {"run.name": "local"}))
    remote = run_experiment(with_overrides(base, {"run.name": "remote", "run.runtime": "flower-simulation"}))

    # Assert: same epochs (accuracy, loss, bytes), same final model, the same ledger rows (tensor bytes; the
    # values carry measured seconds, whose encoded length varies), same leakage
    keys = ("round", "test_accuracy", "test_loss", "bytes_up", "bytes_down")
    assert [[r[k] for k in keys] for r in remote.history] == [[r[k] for k in keys] for r in local.history]
    assert [r["train_loss"] for r in remote.history] == pytest.approx([r["train_loss"] for r in local.history],
                                                                      abs=1e-6)
    want = torch.load(local.run_dir / "model.pt")
    got = torch.load(remote.run_dir / "model.pt")
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)
    rows = lambda r: [(e["round"], e["sender"], e["receiver"], e["kind"], e["bytes"])  # noqa: E731
                      for e in map(json.loads, (r.run_dir / "ledger.jsonl").read_text().splitlines()) if "sender" in e]
    assert rows(remote) == rows(local) and len(rows(local)) > 20
    assert remote.summary["ledger_equals_formula"] is True
    assert remote.summary["leakage"] == pytest.approx(local.summary["leakage"])
    assert remote.summary["runtime"] == "flower-simulation"


@needs_ray
def test_fltrust_on_splitfed_on_flower_equals_in_process(tmp_path):
    # Prepare: SplitFed v2 with FLTrust: the ServerApp trains the centre's root agent itself
    base = _config(tmp_path, seed=2, split={"variant": "sflv2"}, aggregation={"name": "fltrust", "root_samples": 20})

    # Execute
    local = run_experiment(with_overrides(base, {"run.name": "local"}))
    remote = run_experiment(with_overrides(base, {"run.name": "remote", "run.runtime": "flower-simulation"}))

    # Assert: the same trust scores and accuracy (scored on the 40 samples outside the root set)
    assert local.summary["test_samples"] == remote.summary["test_samples"] == 40
    for want, got in zip(local.history, remote.history):
        assert got["test_accuracy"] == want["test_accuracy"]
        assert got["aggregation"]["scores"] == pytest.approx(want["aggregation"]["scores"], abs=1e-6)
    assert remote.summary["ledger_equals_formula"] is True
