"""Attacks through the user's path: ``[attack]`` in a config, run by ``run_experiment``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _attack_fixtures import context, participant, train_request, update
from cotrain.behaviours import behave, build_attack
from cotrain.experiment import config_from_dict, run_experiment


def test_behave_binds_an_estimating_attack_to_its_participant(tiny_dataset):
    # Prepare
    attack = build_attack("ipm", epsilon=100.0, honest_samples=2)
    wrapped = behave(lambda data: participant(data), tiny_dataset, [attack], context())
    request = train_request()
    # Execute
    sent = update(wrapped.handle(request), request)
    # Assert: a large step against its own honest update (the mean of two includes it)
    honest = update(participant(tiny_dataset).handle(request), request)
    assert float(torch.nn.functional.cosine_similarity(sent, honest, dim=0)) < -0.5


@pytest.mark.parametrize("name,options", [("alie", {"honest_samples": 2}), ("backdoor", {"target": 1})])
def test_an_attack_section_runs_through_run_experiment(tmp_path: Path, name, options):
    # Prepare: 4 participants, half malicious
    cfg = config_from_dict({
        "run": {"name": name, "output_dir": str(tmp_path / "runs"), "seed": 1},
        "data": {"participants": 4, "options": {"n_train": 120, "n_test": 40, "num_domains": 1}},
        "model": {"name": "small_cnn", "options": {"width": 4}},
        "fedavg": {"rounds": 2, "local_steps": 2, "batch_size": 8},
        "attack": {"name": name, "fraction": 0.5, "options": options},
    })
    # Execute
    result = run_experiment(cfg)
    # Assert
    assert len(result.summary["malicious"]) == 2 and len(result.history) == 2
