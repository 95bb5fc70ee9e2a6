import copy

import pytest
import torch

from cotrain.aggregation import weighted_mean
from cotrain.models import build_model
from cotrain.runtime import InProcessGrid
from cotrain.split import (SplitAgent, SplitSettings, agent_batch_stream, communication_model, epoch_batches,
                           run_split, side_state, split_model)

SEED = 3


def _factory():
    return build_model("small_cnn", input_shape=(1, 8, 8), num_classes=3, width=4, seed=11)


def _agents(dataset, shards, **cut):
    return {pid: SplitAgent(pid, model_factory=_factory, train_data=dataset.subset(idx), seed=SEED, **cut)
            for pid, idx in shards.items()}


def _sgd_over(model, dataset, batches, lr):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for idx in batches:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(dataset.x[idx]), dataset.y[idx]).backward()
        opt.step()


def _assert_same(a, b, atol=1e-6):
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(p, q, atol=atol), name


def _shards(n_agents, n=120):
    return {f"a{k}": list(range(k, n, n_agents)) for k in range(n_agents)}


def _concatenated_order(shards, epochs, batch_size):
    """The centralised mini-batches: agent a0's epoch order, then a1's, ... in global indices."""
    order = []
    for epoch in range(1, epochs + 1):
        for pid in sorted(shards):
            idx = torch.tensor(shards[pid])
            for b in epoch_batches(len(idx), batch_size, agent_batch_stream(SEED, pid, epoch)):
                order.append(idx[b])
    return order


@pytest.mark.parametrize("variant", ["sequential", "sflv1", "sflv2"])
@pytest.mark.parametrize("cut", ["conv1", 2])
def test_one_agent_equals_centralised(tiny_dataset, variant, cut):
    settings = SplitSettings(variant=variant, cut=cut, epochs=2, batch_size=16, lr=0.1)
    shards = {"a0": list(range(len(tiny_dataset)))}
    grid = InProcessGrid(_agents(tiny_dataset, shards, cut=cut))
    split = _factory()
    run_split(grid, split, settings, seed=SEED)
    central = _factory()
    _sgd_over(central, tiny_dataset, _concatenated_order(shards, 2, 16), 0.1)
    _assert_same(split, central)
    assert not torch.allclose(next(split.parameters()), next(_factory().parameters()))


def test_k_agents_sequential_equals_centralised_over_concatenated_order(tiny_dataset):
    shards = _shards(3)
    settings = SplitSettings(variant="sequential", cut="conv2", epochs=2, batch_size=16, lr=0.1)
    grid = InProcessGrid(_agents(tiny_dataset, shards, cut="conv2"))
    split = _factory()
    run_split(grid, split, settings, seed=SEED)
    central = _factory()
    _sgd_over(central, tiny_dataset, _concatenated_order(shards, 2, 16), 0.1)
    _assert_same(split, central)


def test_u_shaped_one_agent_equals_centralised_and_centre_never_sees_labels(tiny_dataset):
    shards = {"a0": list(range(len(tiny_dataset)))}
    settings = SplitSettings(cut="conv1", tail_cut="conv2", epochs=2, batch_size=16, lr=0.1)
    grid = InProcessGrid(_agents(tiny_dataset, shards, cut="conv1", tail_cut="conv2"))
    split = _factory()
    history = run_split(grid, split, settings, seed=SEED)
    central = _factory()
    _sgd_over(central, tiny_dataset, _concatenated_order(shards, 2, 16), 0.1)
    _assert_same(split, central)
    ups = [e for e in grid.ledger.entries if e.direction == "up"]
    assert all("labels" not in e.tensor_names for e in ups)
    assert history[-1].train_loss == history[-1].train_loss  # the loss comes back from the agent


def test_sflv1_equals_fedavg_of_full_models_over_the_same_batches(tiny_dataset):
    shards = _shards(2)
    settings = SplitSettings(variant="sflv1", cut=1, epochs=2, batch_size=16, lr=0.1)
    grid = InProcessGrid(_agents(tiny_dataset, shards, cut=1))
    split = _factory()
    run_split(grid, split, settings, seed=SEED)
    central = _factory()
    for epoch in (1, 2):
        states, weights = [], []
        for pid in sorted(shards):
            local = copy.deepcopy(central)
            idx = torch.tensor(shards[pid])
            _sgd_over(local, tiny_dataset,
                      [idx[b] for b in epoch_batches(len(idx), 16, agent_batch_stream(SEED, pid, epoch))], 0.1)
            states.append(side_state(local))
            weights.append(len(idx))
        central.load_state_dict(weighted_mean(states, weights))
    _assert_same(split, central, atol=1e-5)


def test_sflv2_trains_and_differs_from_v1(tiny_dataset):
    shards = _shards(3)
    models = {}
    for variant in ("sflv1", "sflv2"):
        grid = InProcessGrid(_agents(tiny_dataset, shards, cut="conv2"))
        models[variant] = _factory()
        settings = SplitSettings(variant=variant, cut="conv2", epochs=3, batch_size=16, lr=0.2)
        history = run_split(grid, models[variant], settings, seed=SEED)
        assert history[-1].train_loss < history[0].train_loss
    assert not torch.allclose(models["sflv1"].head.weight, models["sflv2"].head.weight)


@pytest.mark.parametrize("variant", ["sequential", "sflv1", "sflv2"])
@pytest.mark.parametrize("tail_cut", [None, "conv2"])
def test_ledger_bytes_equal_the_formula_exactly(tiny_dataset, variant, tail_cut):
    shards = _shards(3, n=100)  # 34, 33, 33 samples: last mini-batches are partial
    settings = SplitSettings(variant=variant, cut="conv1", tail_cut=tail_cut, epochs=2, batch_size=16, lr=0.1)
    grid = InProcessGrid(_agents(tiny_dataset, shards, cut="conv1", tail_cut=tail_cut))
    history = run_split(grid, _factory(), settings, seed=SEED)
    formula = communication_model(_factory(), (1, 8, 8), 100, "conv1", tail_cut)
    for record in history:
        assert record.bytes == grid.ledger.total_bytes(round=record.epoch) == formula.split_bytes(3)
    payloads = {e.payload for e in grid.ledger.entries if e.bytes}
    assert payloads == {"activations", "gradients", "parameters"}
    # labels are their own payload kind: B int64 per mini-batch unless the split is U-shaped (p s_y per epoch)
    labels = grid.ledger.total_bytes(payload="labels")
    assert labels == (0 if tail_cut else 2 * 100 * 8)
    assert sum(grid.ledger.bytes_by_payload().values()) == grid.ledger.total_bytes()


def test_formula_by_hand():
    # small_cnn width 4 on 1x8x8: conv1 out 4x4x4 = 64 values; p = 100, K = 3.
    formula = communication_model(_factory(), (1, 8, 8), 100, "conv1")
    front, _ = split_model(_factory(), "conv1")
    assert formula.cut_values == 64
    assert formula.agent_side_bytes == 4 * (4 * 1 * 9 + 4)
    assert formula.split_bytes(3) == 2 * 100 * 64 * 4 + 100 * 8 + 2 * 3 * 160
    assert formula.fedavg_bytes(3) == 6 * formula.model_bytes
    k_star = formula.crossover_agents()
    assert formula.split_bytes(int(k_star) + 1) < formula.fedavg_bytes(int(k_star) + 1)
    assert formula.split_bytes(int(k_star)) >= formula.fedavg_bytes(int(k_star))


def test_cut_that_does_not_exist_is_a_clear_error(tiny_dataset):
    with pytest.raises(ValueError, match="no block named 'conv9'"):
        SplitAgent("a", model_factory=_factory, train_data=tiny_dataset, seed=0, cut="conv9")
    with pytest.raises(ValueError, match="cut 7 does not exist"):
        split_model(_factory(), 7)
    with pytest.raises(ValueError, match="tail cut after the first cut"):
        split_model(_factory(), "conv2", "conv1")
    with pytest.raises(ValueError, match="unknown split variant"):
        SplitSettings(variant="sflv3")
