"""The federated protocol: aggregation, both topologies, and the ledger's proof that only parameters crossed."""

import copy

import pytest
import torch

from _transfer_fixtures import (DATA_DIMS, SOURCE_BATCH, TARGET_BATCH, make_disc, make_model, make_sources,
                                make_target_x, same, snapshot, tiny_settings)
from cotrain.runtime import SERVER, InProcessGrid
from cotrain.runtime.message import Message, PayloadKind
from cotrain.transfer import FadaSettings, LocalPhase, SourceNode, discriminator_loss, run_fada
from cotrain.transfer.nodes import PRETRAIN, pack
from cotrain.transfer.parties import build_federation


def _run(topology: str, sources: tuple[str, ...] = ("s1", "s2"), **kw):
    model, disc = make_model(), make_disc()
    fed = build_federation(model, disc, make_sources(sources), make_target_x(), topology=topology, seed=0)
    result = fed.run(model, disc, tiny_settings(**kw))
    return fed, result


@pytest.mark.parametrize("sources", [("s1",), ("s1", "s2")])
def test_topologies_give_the_same_model(sources) -> None:
    fed_t, res_t = _run("target", sources)
    fed_a, res_a = _run("aggregator", sources)
    assert same(snapshot(res_t.model), snapshot(res_a.model))
    assert same(snapshot(res_t.discriminator), snapshot(res_a.discriminator))
    # at the target the target node is the server; with an aggregator it is a participant
    assert "target" not in fed_t.grid.participant_ids()
    assert {e.receiver for e in fed_a.grid.ledger.entries} >= {"target", *sources}
    assert len(res_t.history) == 2 + 2  # pretrain rounds + adaptation rounds


@pytest.mark.parametrize("topology", ["target", "aggregator"])
def test_only_parameters_cross(topology) -> None:
    """Fails if any message carries a tensor whose leading dimension is a batch or data set size."""
    fed, _ = _run(topology)
    entries = fed.grid.ledger.entries
    assert entries
    for e in entries:
        assert e.payload == PayloadKind.PARAMETERS.value, e
        for name, shape in zip(e.tensor_names, e.shapes):
            assert name.split(".")[0] in {"G", "T", "D"}, (e.kind, name)
            assert not shape or shape[0] not in DATA_DIMS, (e.kind, name, shape)
    # sources never receive anything of the target's: only G, T, D parameters and plain settings
    to_sources = [e for e in entries if e.receiver in ("s1", "s2")]
    assert to_sources and all(e.sender == SERVER for e in to_sources)
    assert all(e.bytes > 0 for e in entries)


def test_parameters_only_check_catches_a_data_batch() -> None:
    """The check above is meaningful: a feature upload of one batch would be caught."""
    features = torch.zeros(SOURCE_BATCH, 16)
    assert features.shape[0] in DATA_DIMS and TARGET_BATCH in DATA_DIMS
    for p in list(make_model().state_dict().values()) + list(make_disc().state_dict().values()):
        assert p.shape[0] not in DATA_DIMS


def test_pretraining_aggregates_sources_by_examples() -> None:
    sources = make_sources(("s1", "s2"))
    model, disc = make_model(), make_disc()
    settings = FadaSettings(rounds=0, pretrain_rounds=1, pretrain=LocalPhase(2, batch_size=SOURCE_BATCH, lr=1e-2))
    fed = build_federation(model, disc, sources, make_target_x(), topology="target", seed=0)
    init = copy.deepcopy(model)
    result = fed.run(model, disc, settings)
    # redo each source's step 1 by hand, and average with weights n_s / sum n
    msg = Message(PRETRAIN, tensors={**pack("G", init.blocks), **pack("T", init.head)},
                  payload=PayloadKind.PARAMETERS, values={**settings.pretrain.to_values(1), "exchange": 0})
    ups, ns = [], []
    for sid, data in sources.items():
        node = SourceNode(sid, model=copy.deepcopy(init), discriminator=make_disc(), data=data, seed=0)
        ups.append(node.handle(msg).tensors)
        ns.append(len(data))
    for name, value in snapshot(result.model.blocks).items():
        expected = sum(u[f"G.{name}"] * n for u, n in zip(ups, ns)) / sum(ns)
        assert torch.allclose(value, expected, atol=1e-6)


def test_one_step_discriminators_average_to_a_pooled_sgd_step() -> None:
    """D_all = 1/2 D_s + 1/2 D_t after one full-batch SGD step each = one SGD step on (L_s + L_t) / 2."""
    sources = make_sources(("s1",))
    xt = make_target_x()
    model, disc = make_model(), make_disc()
    lr = 0.3
    settings = FadaSettings(rounds=1, pretrain_rounds=0,
                            discriminator=LocalPhase(1, batch_size=1000, lr=lr, beta1=0.0, optimizer="sgd"),
                            adapt=LocalPhase(0))
    reference = copy.deepcopy(disc)
    g = copy.deepcopy(model).eval()
    fed = build_federation(model, disc, sources, xt, topology="target", seed=0)
    result = fed.run(model, disc, settings)
    with torch.no_grad():
        fs, ft = g.features(sources["s1"].x), g.features(xt)
    loss = 0.5 * discriminator_loss(source_logits=reference(fs)) + 0.5 * discriminator_loss(target_logits=reference(ft))
    loss.backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= lr * p.grad
    for (name, got), want in zip(result.discriminator.state_dict().items(), reference.state_dict().values()):
        assert torch.allclose(got, want, atol=1e-6), name


def test_target_own_encoder_enters_the_aggregate() -> None:
    _, with_own = _run("target", ("s1",), target_encoder=True)
    _, without = _run("target", ("s1",), target_encoder=False)
    assert not same(snapshot(with_own.model.blocks), snapshot(without.model.blocks))


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        FadaSettings(rounds=0, pretrain_rounds=0)
    with pytest.raises(ValueError):
        FadaSettings(target_weight=1.0)
    grid = InProcessGrid({"s1": SourceNode("s1", model=make_model(), discriminator=make_disc(),
                                           data=make_sources()["s1"], seed=0)})
    with pytest.raises(ValueError, match="no participant 'target'"):
        run_fada(grid, make_model(), make_disc(), tiny_settings())


def test_server_adam_on_discriminator_is_centralised_adam() -> None:
    """FedAdam for D: one SGD step of rate 1 per node, a server Adam step = Adam on the pooled loss."""
    sources = make_sources(("s1",))
    xt = make_target_x()
    model, disc = make_model(), make_disc()
    settings = FadaSettings(rounds=1, pretrain_rounds=0, discriminator_exchanges=2, discriminator_server_lr=0.01,
                            discriminator=LocalPhase(1, batch_size=1000, lr=1.0, beta1=0.0, optimizer="sgd"),
                            adapt=LocalPhase(0))
    reference = copy.deepcopy(disc)
    opt = torch.optim.Adam(reference.parameters(), lr=0.01, betas=(0.5, 0.999))
    g = copy.deepcopy(model).eval()
    result = build_federation(model, disc, sources, xt, topology="aggregator", seed=0).run(model, disc, settings)
    with torch.no_grad():
        fs, ft = g.features(sources["s1"].x), g.features(xt)
    for _ in range(2):
        opt.zero_grad()
        (0.5 * discriminator_loss(source_logits=reference(fs))
         + 0.5 * discriminator_loss(target_logits=reference(ft))).backward()
        opt.step()
    for (name, got), want in zip(result.discriminator.state_dict().items(), reference.state_dict().values()):
        assert torch.allclose(got, want, atol=1e-5), name


def test_without_sync_sources_receive_g_only_to_start() -> None:
    """``sync_sources=False``: the first step-5 message carries the common G, T (no pretraining round
    here), later ones only D_all; with sync every step-5 message carries the aggregates."""
    for sync in (False, True):
        model, disc = make_model(), make_disc()
        fed = build_federation(model, disc, make_sources(), make_target_x(), topology="target", seed=0)
        settings = FadaSettings(rounds=3, pretrain_rounds=0, sync_sources=sync,
                                discriminator=LocalPhase(1, batch_size=TARGET_BATCH, lr=1.0, beta1=0.0, optimizer="sgd"),
                                adapt=LocalPhase(1, batch_size=SOURCE_BATCH))
        fed.run(model, disc, settings)
        adapts = [e for e in fed.grid.ledger.entries if e.kind == "fada.adapt" and e.sender == SERVER]
        carries_g = [any(n.startswith("G.") for n in e.tensor_names) for e in adapts]
        assert carries_g == ([True, True, True] if sync else [True, False, False])
