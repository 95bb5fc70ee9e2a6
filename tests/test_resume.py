"""Checkpoint and resume: a run stopped after round k and resumed equals the uninterrupted run,
bit for bit (model, round records but their timings, ledger), for FedAvg, split learning and FADA.
ECOS is one-shot (one round): it has nothing to resume and keeps no checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cotrain.cli import app
from cotrain.experiment import RunInterrupted, config_from_dict, read_jsonl, resume_experiment, run_experiment
from cotrain.experiment.records import divergence

REPO = Path(__file__).resolve().parents[1]
DATA = {"participants": 3, "options": {"n_train": 90, "n_test": 40, "num_domains": 1}}


def _cfg(tmp_path: Path, name: str, method: dict) -> object:
    return config_from_dict({"run": {"name": name, "output_dir": str(tmp_path), "seed": 3, "threads": 1},
                             "data": DATA, "model": {"options": {"width": 4}}, **method})


FEDAVG = {"fedavg": {"rounds": 4, "local_steps": 2, "batch_size": 8, "momentum": 0.5},
          "aggregation": {"name": "centered_clipping", "options": {"tau": 0.5}}}  # keeps a centre across rounds
SPLIT = {"method": {"name": "split"}, "split": {"variant": "sflv2", "cut": "conv1", "epochs": 3, "batch_size": 16,
                                                "momentum": 0.9, "leakage_samples": 20}}
FADA = {"method": {"name": "fada"},
        "data": {**DATA, "participants": 2, "options": {"n_train": 60, "n_test": 20, "size": 16, "num_domains": 1}},
        "fada": {"target_dataset": "synthetic", "target_options": {"n_train": 40, "n_test": 20, "size": 16,
                                                                  "num_domains": 1, "seed": 7},
                 "rounds": 2, "pretrain_rounds": 2, "pretrain_steps": 2, "batch_size": 13, "disc_exchanges": 2,
                 "adapt_steps": 1}}


def _same_run(a: Path, b: Path) -> None:
    ma, mb = torch.load(a / "model.pt"), torch.load(b / "model.pt")
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    timeless = lambda p: [{k: v for k, v in r.items() if "seconds" not in k} for r in read_jsonl(p / "metrics.jsonl")]
    assert timeless(a) == timeless(b)
    # split agents report their compute seconds in values, so value_bytes vary with timing digits
    untimed = lambda p: [{k: v for k, v in r.items() if k != "value_bytes"} for r in read_jsonl(p / "ledger.jsonl")]
    assert untimed(a) == untimed(b)


@pytest.mark.parametrize("method, stop", [(FEDAVG, 2), (SPLIT, 1), (FADA, 1), (FADA, 2), (FADA, 3)],
                         ids=["fedavg", "split-sflv2", "fada-pretrain", "fada-after-pretrain", "fada-adapt"])
def test_a_resumed_run_equals_the_uninterrupted_one(tmp_path, method, stop):
    cfg = lambda name: _cfg(tmp_path, name, {**method, "data": method.get("data", DATA)})
    full = run_experiment(cfg("full"))
    with pytest.raises(RunInterrupted, match=rf"after round {stop} of {len(full.history)}; resume with"):
        run_experiment(cfg("cut"), stop_after_round=stop)
    cut = tmp_path / "cut"
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rounds_done"] == stop and summary["resumable"]
    assert len(read_jsonl(cut / "metrics.jsonl")) == stop
    assert torch.load(cut / "checkpoint.pt", weights_only=True)["round"] >= stop  # plain tensors and values only
    resumed = resume_experiment(cut)
    assert resumed.summary["status"] == "complete" and resumed.summary["resumed_after_rounds"] == [stop]
    assert not (cut / "checkpoint.pt").exists()
    _same_run(full.run_dir, cut)


def test_lines_past_the_checkpoint_are_cut_and_complete_folders_refused(tmp_path):
    run_dir = tmp_path / "cut"
    with pytest.raises(RunInterrupted):
        run_experiment(_cfg(tmp_path, "cut", FEDAVG), stop_after_round=1)
    with open(run_dir / "metrics.jsonl", "a") as f:  # a round that ended after the checkpoint, then a crash
        f.write('{"round": 2}\n')
    with open(run_dir / "ledger.jsonl", "a") as f:
        f.write('{"failed": {"round": 2, "participant": "x", "reason": "y"}}\n')
    resume_experiment(run_dir)
    assert [r["round"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3, 4]
    result = CliRunner().invoke(app, ["run", "--resume", str(run_dir)])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        f"error: resume: {run_dir} is a complete run; nothing to resume"]
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["run", "--resume", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no config.toml" in result.output and len(result.output.strip().splitlines()) == 1


def test_a_non_finite_server_loss_is_divergence_and_an_unscored_round_is_not():
    # lr = 1e6 on small_cnn was measured to stay finite (test loss ~1e5..1e6, chance accuracy), so the
    # detector is tested on records: a scored round with an infinite loss, split's NaN centre loss
    assert divergence({"round": 3, "test_accuracy": 0.1, "test_loss": float("inf")}) == "test loss is inf"
    assert divergence({"round": 2, "test_accuracy": 0.5, "test_loss": 1.0, "train_loss": float("nan")}) == \
        "train loss is nan"
    assert divergence({"round": 2, "test_accuracy": float("nan"), "test_loss": float("nan")}) is None  # eval_every


TINY = """
[run]
name = "sig"
seed = 3
threads = 1

[data]
participants = 3
options = { n_train = 90, n_test = 40, num_domains = 1 }

[model]
options = { width = 4 }

[fedavg]
rounds = 12
local_steps = 20
batch_size = 8
"""


def test_sigint_stops_a_cli_run_after_a_round_and_resume_finishes_it_equal(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cotrain.cli", "run", str(config), "-o", str(tmp_path / "runs"),
                             "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "runs" / "sig" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == 1 and "resume with: cotrain run --resume" in lines[0], lines
    run_dir = tmp_path / "runs" / "sig"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    result = CliRunner().invoke(app, ["run", "--resume", str(run_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    full = CliRunner().invoke(app, ["run", str(config), "-o", str(tmp_path / "runs"), "--name", "full", "--quiet"])
    assert full.exit_code == 0, full.output
    _same_run(tmp_path / "runs" / "full", run_dir)
