import pytest
import torch
from cotrain.aggregation import Upload, build_aggregator
from cotrain.federated import (FedAvgParticipant, FedAvgSettings, batch_order, evaluate,
                               model_state, run_fedavg, sample_participants)
from cotrain.models import build_model
from cotrain.runtime import InProcessGrid
from cotrain.seeding import torch_generator


def _factory():
    return build_model("mlp", input_shape=(1, 8, 8), num_classes=3, hidden=[16], seed=11)


def test_fedavg_with_one_participant_equals_plain_sgd(tiny_dataset):
    # Prepare
    settings = FedAvgSettings(rounds=3, local_steps=4, batch_size=16, lr=0.1)
    grid = InProcessGrid({"p": FedAvgParticipant("p", model_factory=_factory, train_data=tiny_dataset, seed=5)})
    federated = _factory()
    # Execute
    run_fedavg(grid, federated, settings, seed=5)
    # Assert: the same mini-batches, plain SGD, no federation.
    central = _factory()
    opt = torch.optim.SGD(central.parameters(), lr=0.1)
    for rnd in (1, 2, 3):
        for idx in batch_order(len(tiny_dataset), 16, 4, torch_generator(5, "batches", "p", rnd)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(central(tiny_dataset.x[idx]), tiny_dataset.y[idx]).backward()
            opt.step()
    for (name, a), b in zip(federated.named_parameters(), central.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert not torch.allclose(next(federated.parameters()), next(_factory().parameters()))


def test_fedsgd_with_one_participant_equals_sgd_steps(tiny_dataset):
    settings = FedAvgSettings(rounds=2, batch_size=32, upload="gradient", server_lr=0.2)
    grid = InProcessGrid({"p": FedAvgParticipant("p", model_factory=_factory, train_data=tiny_dataset, seed=1)})
    federated = _factory()
    run_fedavg(grid, federated, settings, seed=1)
    central = _factory()
    opt = torch.optim.SGD(central.parameters(), lr=0.2)
    for rnd in (1, 2):
        (idx,) = batch_order(len(tiny_dataset), 32, 1, torch_generator(1, "batches", "p", rnd))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(central(tiny_dataset.x[idx]), tiny_dataset.y[idx]).backward()
        opt.step()
    for a, b in zip(federated.parameters(), central.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    # The gradient upload is on the ledger as gradients, with the batch size as metadata.
    ups = [e for e in grid.ledger.entries if e.direction == "up"]
    assert {e.payload for e in ups} == {"gradients"}


def test_weighted_average_by_hand():
    # (1*[1, 2] + 3*[4, 8]) / 4 = [3.25, 6.5]
    ups = [Upload("a", {"w": torch.tensor([1.0, 2.0])}, weight=1), Upload("b", {"w": torch.tensor([4.0, 8.0])}, weight=3)]
    out = build_aggregator("fedavg")(ups)
    assert torch.equal(out.tensors["w"], torch.tensor([3.25, 6.5]))
    assert out.weights == {"a": 0.25, "b": 0.75} and out.excluded == []


def test_median_by_hand():
    ups = [Upload(p, {"w": torch.tensor(v)}) for p, v in (("a", [1.0, 9.0]), ("b", [2.0, -5.0]), ("c", [100.0, 0.0]))]
    assert torch.equal(build_aggregator("median")(ups).tensors["w"], torch.tensor([2.0, 0.0]))


def test_aggregation_errors():
    with pytest.raises(ValueError, match="no uploads"):
        build_aggregator("fedavg")([])
    with pytest.raises(ValueError, match="unknown aggregator 'krum9'.*fedavg"):
        build_aggregator("krum9")
    with pytest.raises(ValueError, match="aggregator 'fedavg': unknown option.*beta"):
        build_aggregator("fedavg", beta=0.1)


def test_sampling_is_seeded_sorted_and_sized():
    ids = [f"p{i}" for i in range(10)]
    s = FedAvgSettings(fraction=0.3)
    a = sample_participants(ids, s, seed=0, round=1)
    assert a == sample_participants(ids, s, seed=0, round=1) and a == sorted(a) and len(a) == 3
    rounds = {tuple(sample_participants(ids, s, seed=0, round=r)) for r in range(1, 8)}
    assert len(rounds) > 1
    with pytest.raises(ValueError, match="11 participants per round"):
        sample_participants(ids, FedAvgSettings(participants_per_round=11), seed=0, round=1)


def test_fedavg_learns_and_counts_bytes(tiny_dataset):
    parts = {f"p{i}": FedAvgParticipant(f"p{i}", model_factory=_factory, seed=2,
                                         train_data=tiny_dataset.subset(range(i * 50, i * 50 + 50)))
             for i in range(4)}
    grid = InProcessGrid(parts)
    model = _factory()
    before = evaluate(model, tiny_dataset)["accuracy"]
    history = run_fedavg(grid, model, FedAvgSettings(rounds=15, local_steps=5, batch_size=10, lr=0.5, fraction=0.5),
                         seed=2, evaluate=lambda m: evaluate(m, tiny_dataset))
    model_bytes = sum(t.numel() * 4 for t in model_state(model).values())
    assert all(r.bytes_down == 2 * model_bytes and r.bytes_up == 2 * model_bytes for r in history)
    assert history[-1].test_accuracy > max(before, 0.6)
    assert set(history[0].participant_metrics) == set(history[0].participants)


def test_eval_every_scores_every_k_rounds_and_the_last(tiny_dataset):
    import math

    grid = InProcessGrid({"p": FedAvgParticipant("p", model_factory=_factory, train_data=tiny_dataset, seed=5)})
    calls = []
    history = run_fedavg(grid, _factory(), FedAvgSettings(rounds=5, local_steps=1, batch_size=16, eval_every=2),
                         seed=5, evaluate=lambda m: calls.append(1) or evaluate(m, tiny_dataset))
    assert len(calls) == 3  # rounds 2, 4 and the last, 5
    assert [not math.isnan(r.test_accuracy) for r in history] == [False, True, False, True, True]
