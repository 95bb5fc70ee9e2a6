import json

import pytest

from cotrain.experiment.config import config_from_dict
from cotrain.experiment.errors import ConfigError
from cotrain.experiment.runner import run_experiment


def _cfg(tmp_path, **split):
    return config_from_dict({
        "run": {"name": "split", "output_dir": str(tmp_path), "seed": 1},
        "data": {"dataset": "synthetic", "participants": 3, "max_train_samples": 120, "max_test_samples": 60},
        "model": {"name": "small_cnn", "options": {"width": 4}},
        "method": {"name": "split"},
        "split": {"cut": "conv1", "epochs": 2, "batch_size": 16, "leakage_samples": 40, **split},
    })


@pytest.mark.parametrize("variant", ["sequential", "sflv2"])
def test_split_experiment_writes_a_run_whose_ledger_equals_the_formula(tmp_path, variant):
    result = run_experiment(_cfg(tmp_path, variant=variant))
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert len(result.history) == 2
    assert result.summary["ledger_equals_formula"] is True
    assert result.summary["leakage"]["num_observed"] >= 40
    report = (result.run_dir / "report.html").read_text()
    assert "Split learning" in report
    # the report speaks of epochs, lists what ran, and shows the leakage as a table of its own
    assert "<h2>Per epoch</h2>" in report and "<h2>Per round</h2>" not in report and "<th>epoch</th>" in report
    assert "<td>split.variant</td><td>" + variant + "</td>" in report and "<td>fedavg.lr</td>" not in report
    assert "<h2>Leakage (cut-layer activations)</h2>" in report and "<th>majority_baseline</th>" in report
    assert summary["variant"] == variant and summary["rounds"] == 2
    assert summary["ledger_bytes_per_epoch"] == [r["bytes_up"] + r["bytes_down"] for r in result.history]


def test_a_cut_that_does_not_exist_fails_before_training(tmp_path):
    with pytest.raises(ConfigError, match="split.cut.*no block named 'conv7'"):
        run_experiment(_cfg(tmp_path, cut="conv7"))
    assert not any(tmp_path.iterdir())
