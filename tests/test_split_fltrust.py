"""FLTrust on SplitFed: the centre's own agent on its root set gives the server upload."""

import copy

import pytest
import torch

from cotrain.experiment.config import config_from_dict
from cotrain.experiment.errors import ConfigError
from cotrain.experiment.runner import run_experiment
from cotrain.models import build_model
from cotrain.split import SplitAgent, SplitSettings, agent_batch_stream, epoch_batches, side_state, split_model
from cotrain.split.protocols import root_upload
from cotrain.split.records import BeginInstruction

SEED = 3


def _factory():
    return build_model("small_cnn", input_shape=(1, 8, 8), num_classes=3, width=4, seed=11)


def test_the_root_upload_is_one_epoch_of_joint_sgd_on_the_root_set_and_leaves_the_centre_alone(tiny_dataset):
    # Prepare: a root agent on 40 samples; the centre side as the round begins.
    root_data = tiny_dataset.subset(range(40))
    root = SplitAgent("server-root", model_factory=_factory, train_data=root_data, seed=SEED, cut="conv1")
    model = _factory()
    front, back = split_model(model, "conv1")
    back_before = copy.deepcopy(side_state(back))
    settings = SplitSettings(variant="sflv2", cut="conv1", batch_size=16, lr=0.1)
    begin = BeginInstruction(side_state(front), epoch=2, batch_size=16, lr=0.1).to_message()
    # Execute
    upload = root_upload(root, begin, back, settings, epoch=2)
    # Assert: plain SGD of front + back together over the root agent's epoch order (3 batches of 40)
    reference = _factory()
    opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    for idx in epoch_batches(40, 16, agent_batch_stream(SEED, "server-root", 2)):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(reference(root_data.x[idx]), root_data.y[idx]).backward()
        opt.step()
    expected = side_state(split_model(reference, "conv1")[0])
    assert upload.keys() == expected.keys()
    for name in upload:
        assert torch.allclose(upload[name], expected[name], atol=1e-6), name
    start = side_state(front)
    assert any(not torch.allclose(upload[name], start[name]) for name in upload)  # it did train
    for name, value in side_state(back).items():  # the real centre side never trained on the root set
        assert torch.equal(value, back_before[name]), name


def _cfg(tmp_path, **extra):
    return config_from_dict({
        "run": {"name": "sfl-fltrust", "output_dir": str(tmp_path), "seed": 1},
        "data": {"dataset": "synthetic", "participants": 4, "max_train_samples": 160, "max_test_samples": 80},
        "model": {"name": "small_cnn", "options": {"width": 4}},
        "method": {"name": "split"},
        "split": {"variant": "sflv2", "cut": "conv1", "epochs": 3, "batch_size": 16, "lr": 0.1},
        "aggregation": {"name": "fltrust", "root_samples": 30},
        **extra,
    })


def test_fltrust_on_sflv2_scores_every_agent_off_the_grid_and_scores_the_model_on_the_rest(tmp_path):
    result = run_experiment(_cfg(tmp_path, attack={"name": "sign_flip", "fraction": 0.25}))
    assert result.summary["test_samples"] == 50  # the 30 root samples are never scored on
    (flipper,) = result.summary["malicious"]
    for record in result.history:
        trust = record["aggregation"]["scores"]
        assert set(trust) == set(record["participants"]) and all(0.0 <= t <= 1.0 for t in trust.values())
        assert max(trust.values()) > 0
    # epoch 1, everyone from the same front: the flipped update points away from the centre's own
    # (trust 0, excluded), every honest one towards it
    first = result.history[0]["aggregation"]
    assert first["scores"][flipper] == 0.0 and flipper in first["excluded"]
    assert all(t > 0 for pid, t in first["scores"].items() if pid != flipper)
    # nothing of the root set crossed: the ledger's bytes are the closed form of the 4 agents alone
    assert result.summary["ledger_equals_formula"] is True
    assert "server-root" not in {e.receiver for e in result.ledger.entries}


@pytest.mark.parametrize("split", [{"tail_cut": "conv2"}, {"variant": "sequential"}])
def test_fltrust_with_no_head_at_the_centre_or_nothing_to_aggregate_is_a_config_error(tmp_path, split):
    cfg = _cfg(tmp_path)
    cfg = config_from_dict({**cfg.model_dump(), "split": {**cfg.split.model_dump(), **split}})
    with pytest.raises(ConfigError, match="aggregation.name: 'fltrust' needs the centre's own upload"):
        run_experiment(cfg)
