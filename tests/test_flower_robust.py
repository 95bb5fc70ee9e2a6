"""Robust federated learning on Flower: credit groups against a sign-flip attacker, the same run as in process.

The rule's groups, scores, scaled weights and exclusions are drawn from the root seed on the server
and the attacker is chosen from it where participants are built, so the simulation engine must give
the round records (aggregation included) and the final model of the in-process run.
"""

from __future__ import annotations

import pytest
import torch

from _flower_helpers import needs_ray
from cotrain.experiment.config import ExperimentConfig
from cotrain.runtime.flower.launch import run_flower_simulation, run_inprocess

pytestmark = pytest.mark.flower

JOB = "cotrain.experiment.methods.fedavg:FLOWER_JOB"


@needs_ray
def test_credit_groups_under_attack_on_flower_equals_in_process(tmp_path):
    # Prepare: 6 participants in 2 groups of 3 a round, one sign-flipper (20 %), the patent's rule
    cfg = ExperimentConfig.model_validate({
        "run": {"seed": 11},
        "data": {"dataset": "synthetic", "participants": 6,
                 "options": {"n_train": 360, "n_test": 60, "size": 16, "num_classes": 4}},
        "model": {"name": "mlp", "options": {"hidden": [16]}},
        "fedavg": {"rounds": 2, "local_steps": 3, "batch_size": 16, "lr": 0.2},
        "aggregation": {"name": "credit_groups", "options": {"group_size": 3}},
        "attack": {"name": "sign_flip", "fraction": 0.2},
    })
    description = cfg.model_dump_json()
    # Execute
    want_history, _, want_state = run_inprocess(description, job=JOB)
    history, ledger, state = run_flower_simulation(description, job=JOB, num_participants=6, workdir=tmp_path)
    # Assert: the rule saw the same uploads and decided the same, round by round (and it did decide:
    # the scores differ and someone was excluded, so equal records are not equal defaults)
    assert len(set(want_history[0]["aggregation"]["scores"].values())) > 1
    assert any(r["aggregation"]["excluded"] for r in want_history)
    assert [r["aggregation"].get("info", {}).get("groups") for r in history] == \
        [r["aggregation"].get("info", {}).get("groups") for r in want_history]
    for got, want in zip(history, want_history):
        assert got["aggregation"]["excluded"] == want["aggregation"]["excluded"]
        assert got["aggregation"]["scores"] == pytest.approx(want["aggregation"]["scores"], abs=1e-6)
        assert got["aggregation"]["weights"] == pytest.approx(want["aggregation"]["weights"], abs=1e-6)
    assert all(torch.allclose(state[k], want_state[k], atol=1e-5) for k in want_state)
    assert ledger.total_bytes() > 0
