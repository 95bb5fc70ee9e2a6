"""``[attack] clean_run``: an attacked run measured against the same experiment's clean run."""

import pytest

from cotrain.errors import ConfigError
from cotrain.experiment import config_from_dict, run_experiment


def _cfg(tmp_path, name, **sections):
    cfg = {"run": {"name": name, "output_dir": str(tmp_path), "seed": 3},
           "data": {"dataset": "synthetic", "participants": 3, "max_train_samples": 120, "max_test_samples": 60},
           "model": {"name": "small_cnn", "options": {"width": 4}},
           "fedavg": {"rounds": 2, "local_steps": 2, "batch_size": 16}}
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value)
    return config_from_dict(cfg)


def test_an_attacked_run_reports_its_drop_against_the_clean_run(tmp_path):
    # Prepare: the clean run, then the same experiment with one sign-flipping participant of three
    clean = run_experiment(_cfg(tmp_path, "clean"))
    # Execute
    attacked = run_experiment(_cfg(tmp_path, "attacked", attack={"name": "sign_flip", "fraction": 0.34,
                                                                  "clean_run": str(clean.run_dir)}))
    # Assert: the drop is the clean run's final accuracy minus this run's, both as in their metrics
    s = attacked.summary
    assert s["clean_run"] == str(clean.run_dir)
    assert s["clean_final_test_accuracy"] == clean.history[-1]["test_accuracy"]
    assert s["accuracy_drop_vs_clean"] == pytest.approx(
        clean.history[-1]["test_accuracy"] - attacked.history[-1]["test_accuracy"])
    assert "accuracy_drop_vs_clean" not in clean.summary


def test_another_rule_may_be_the_clean_runs_but_not_other_data_or_rounds(tmp_path):
    # Prepare: a clean FedAvg run
    clean = run_experiment(_cfg(tmp_path, "clean"))
    attack = {"name": "sign_flip", "fraction": 0.34, "clean_run": str(clean.run_dir)}
    # Execute / Assert: a robust rule against clean FedAvg is allowed ...
    robust = run_experiment(_cfg(tmp_path, "median", attack=attack, aggregation={"name": "median"}))
    assert robust.summary["clean_final_test_accuracy"] == clean.history[-1]["test_accuracy"]
    # ... other rounds or another seed are one line naming the keys, before a run folder is made
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ConfigError, match=r"^attack\.clean_run: .* differs in fedavg\.rounds, run\.seed$"):
        run_experiment(_cfg(tmp_path, "other", attack=attack, fedavg={"rounds": 3}, run={"seed": 4}))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_clean_run_must_be_a_complete_run_without_an_attack(tmp_path):
    # Prepare: an attacked run, and a folder that is not a run
    attacked = run_experiment(_cfg(tmp_path, "attacked", attack={"name": "sign_flip", "fraction": 0.34}))
    (tmp_path / "empty").mkdir()
    # Execute / Assert: the same attack with fraction 0 (nobody malicious) is clean
    nobody = run_experiment(_cfg(tmp_path, "nobody", attack={"name": "sign_flip", "fraction": 0.0}))
    assert run_experiment(_cfg(tmp_path, "y", attack={"name": "sign_flip", "fraction": 0.34, "clean_run": str(
        nobody.run_dir)})).summary["clean_final_test_accuracy"] == nobody.history[-1]["test_accuracy"]
    with pytest.raises(ConfigError, match="is not a clean run .*'sign_flip'"):
        run_experiment(_cfg(tmp_path, "x", attack={"name": "sign_flip", "fraction": 0.34,
                                                   "clean_run": str(attacked.run_dir)}))
    with pytest.raises(ConfigError, match="is not a run folder"):
        run_experiment(_cfg(tmp_path, "x", attack={"name": "sign_flip", "fraction": 0.34,
                                                   "clean_run": str(tmp_path / "empty")}))
