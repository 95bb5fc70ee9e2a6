"""The ``fada`` method end to end through the experiment layer, on tiny generated domains."""

import json

import pytest

from _transfer_fixtures import fada_experiment_config
from cotrain.experiment.errors import ConfigError
from cotrain.experiment.runner import run_experiment


def _cfg(tmp_path, **fada):
    return fada_experiment_config(tmp_path, **fada)


@pytest.mark.parametrize("topology", ["target", "aggregator"])
def test_fada_experiment_runs_and_only_parameters_cross(tmp_path, topology):
    result = run_experiment(_cfg(tmp_path, topology=topology, target_encoder_steps=1))
    assert len(result.history) == 1 + 2
    assert result.summary["payloads"] == ["parameters"]
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["method"] == "fada" and summary["topology"] == topology and summary["rounds"] == 3
    assert summary["bytes_total"] == result.ledger.total_bytes() > 0
    assert summary["target_accuracy"] == result.history[-1]["test_accuracy"]


def test_mismatched_domains_fail_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"^fada.size: source and target inputs differ in shape"):
        run_experiment(_cfg(tmp_path, target_options={"n_train": 50, "n_test": 30, "size": 20, "seed": 7}))
    assert not any(tmp_path.iterdir())
