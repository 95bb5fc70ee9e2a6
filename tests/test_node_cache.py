"""A node's data cache: the node loads and partitions once; later processes read its own partition back."""

import pytest
import torch

from cotrain.experiment import setup
from cotrain.experiment.config import ExperimentConfig
from cotrain.runtime.nodecache import NodeCache, node_cache, node_setting, use_node_cache


@pytest.fixture
def cfg() -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "run": {"seed": 3},
        "data": {"dataset": "synthetic", "participants": 3, "options": {"n_train": 90, "n_test": 30, "size": 16}},
        "model": {"name": "mlp", "options": {"hidden": [8]}},
    })


def test_a_node_reads_its_partition_back_without_loading_the_data_again(cfg, tmp_path, monkeypatch):
    # Prepare: the reference partition, built as in process
    want = setup.load_experiment_data(cfg).participant_data(1)
    with use_node_cache(tmp_path / "node-1"):
        # Execute: the first message's process fills the cache ...
        first = setup.node_data(cfg, 1)
        files = list((tmp_path / "node-1").glob("*.pt"))
        # ... a later one (a fresh process: no in-process cache) reads it back, loading nothing
        setup._load_cached.cache_clear()
        monkeypatch.setattr(setup, "load_experiment_data", lambda c: pytest.fail("loaded the data set again"))
        later = setup.node_data(cfg, 1)
    # Assert: one entry; the node holds its own samples only, bit for bit the in-process partition
    assert len(files) == 1
    for got in (first, later):
        local = got.participant_data(1)
        assert torch.equal(local.x, want.x) and torch.equal(local.y, want.y)
        assert len(got.parts) == 3 and [len(p) for p in got.parts] == [0, len(want), 0]
        assert len(got.splits.train) == len(want) and len(got.splits.test) == 0
        assert got.splits.train.num_classes == want.num_classes
    assert node_cache() is None  # the block ended: no cache


def test_a_participant_built_on_a_node_holds_the_in_process_participants_data(cfg, tmp_path):
    reference = setup.build_fedavg_participant(cfg, 2)
    with use_node_cache(tmp_path):
        setup.build_fedavg_participant(cfg, 2)  # fills the cache
        cached = setup.build_fedavg_participant(cfg, 2)
    assert torch.equal(cached.train_data.x, reference.train_data.x)
    assert torch.equal(cached.train_data.y, reference.train_data.y)
    assert type(cached) is type(reference)


def test_a_damaged_entry_is_rebuilt_and_node_settings_are_scoped(tmp_path):
    cache = NodeCache(tmp_path)
    assert cache.get_or_build("k", lambda: {"x": torch.arange(3)})["x"].tolist() == [0, 1, 2]
    cache.path("k").write_bytes(b"not a torch file")
    assert cache.get_or_build("k", lambda: {"x": torch.arange(2)})["x"].tolist() == [0, 1]
    with use_node_cache(None, {"data-dir": "/data/here"}):
        assert node_setting("data-dir") == "/data/here" and node_cache() is None
    assert node_setting("data-dir") is None
