"""Each node's local phases: what it holds, what it trains, and what stays frozen."""

import dataclasses

import pytest
import torch

from _transfer_fixtures import (SOURCE_BATCH, TARGET_BATCH, make_disc, make_model, make_sources, make_target_x,
                                same, snapshot)
from cotrain.runtime.message import Message, PayloadKind
from cotrain.transfer import LocalPhase, SourceNode, TargetNode, frozen
from cotrain.transfer.nodes import ADAPT, DISCRIMINATOR, PRETRAIN, pack


def _source() -> SourceNode:
    return SourceNode("s1", model=make_model(), discriminator=make_disc(), data=make_sources()["s1"], seed=0)


def _target(**kw) -> TargetNode:
    return TargetNode(make_target_x(), model=make_model(), discriminator=make_disc(), seed=0, **kw)


def _msg(kind: str, tensors: dict, phase: LocalPhase) -> Message:
    return Message(kind, tensors=tensors, payload=PayloadKind.PARAMETERS, values=phase.to_values(1))


def _no_grads(module: torch.nn.Module) -> bool:
    return all(p.grad is None for p in module.parameters())


def test_target_holds_no_labels_unless_given() -> None:
    node = _target()
    assert node.labels is None and node.labelled_index is None
    # nothing on the node is a label-sized integer tensor
    assert not any(isinstance(v, torch.Tensor) and not v.is_floating_point() for v in vars(node).values())
    few = _target(labels=torch.tensor([0, 2]), labelled_index=torch.tensor([3, 5]))
    assert few.labels is not None and len(few.labels) == 2
    with pytest.raises(ValueError):
        _target(labels=torch.tensor([0, 2]))


def test_source_discriminator_phase_freezes_g_and_t() -> None:
    node = _source()
    g0, t0, d_all = snapshot(node.model.blocks), snapshot(node.model.head), make_disc(seed=7)
    phase = LocalPhase(3, batch_size=SOURCE_BATCH, lr=0.1, beta1=0.0, optimizer="sgd")
    reply = node.handle(_msg(DISCRIMINATOR, pack("D", d_all), phase))
    assert same(snapshot(node.model.blocks), g0) and same(snapshot(node.model.head), t0)
    assert _no_grads(node.model)
    assert all(p.requires_grad for p in node.model.parameters())  # restored after the phase
    assert set(reply.tensors) == set(pack("D", d_all))
    assert not same({k[2:]: v for k, v in reply.tensors.items()}, snapshot(d_all))  # D_s did train


def test_source_adapt_phase_freezes_d_and_trains_g_t() -> None:
    node = _source()
    d_all = make_disc(seed=7)
    g_agg = make_model(seed=3)
    msg = _msg(ADAPT, {**pack("D", d_all), **pack("G", g_agg.blocks), **pack("T", g_agg.head)},
               LocalPhase(3, batch_size=SOURCE_BATCH, lr=1e-2))
    reply = node.handle(msg)
    assert same(snapshot(node.discriminator), snapshot(d_all))  # D_all held fixed
    assert _no_grads(node.discriminator)
    assert {k.split(".")[0] for k in reply.tensors} == {"G", "T"}
    assert not same({k[2:]: v for k, v in reply.tensors.items() if k.startswith("G.")}, snapshot(g_agg.blocks))


def test_source_pretrain_starts_from_broadcast_model() -> None:
    node = _source()
    init = make_model(seed=5)
    phase = LocalPhase(0, batch_size=SOURCE_BATCH)
    reply = node.handle(_msg(PRETRAIN, {**pack("G", init.blocks), **pack("T", init.head)}, phase))
    assert same(snapshot(node.model.blocks), snapshot(init.blocks))
    assert reply.values["num_examples"] == 23


def test_target_phases_freeze_what_they_must() -> None:
    node = _target()
    g = snapshot(make_model(seed=4).blocks)
    node.set_encoder(g)
    d0 = snapshot(make_disc(seed=8))
    d_t = node.train_discriminator(d0, LocalPhase(2, batch_size=TARGET_BATCH, lr=0.1, optimizer="sgd", beta1=0.0), 1)
    assert same(snapshot(node.model.blocks), g) and _no_grads(node.model)
    assert not same(d_t, d0)
    t = snapshot(make_model(seed=6).head)
    g_t = node.train_encoder(d_t, t, LocalPhase(2, batch_size=TARGET_BATCH, lr=1e-2), 1)
    assert same(snapshot(node.discriminator), d_t) and same(snapshot(node.model.head), t)
    assert _no_grads(node.discriminator) and _no_grads(node.model.head)
    assert not same(g_t, g)


def test_target_few_labels_enter_encoder_step() -> None:
    d, t = snapshot(make_disc(seed=8)), snapshot(make_model(seed=6).head)
    phase = LocalPhase(2, batch_size=TARGET_BATCH, lr=1e-2)
    plain, labelled = _target(), _target(labels=torch.tensor([0, 1, 2]), labelled_index=torch.tensor([0, 1, 2]))
    for node in (plain, labelled):
        node.set_encoder(snapshot(make_model(seed=4).blocks))
    assert not same(plain.train_encoder(d, t, phase, 1), labelled.train_encoder(d, t, phase, 1))


def test_frozen_restores_modes() -> None:
    m = make_model()
    m.train()
    m.head.weight.requires_grad_(False)
    with frozen(m):
        assert not m.training and not any(p.requires_grad for p in m.parameters())
    assert m.training and not m.head.weight.requires_grad and m.head.bias.requires_grad


def test_local_phase_round_trips_through_values() -> None:
    phase = LocalPhase(4, batch_size=5, lr=0.3, beta1=0.0, weight=0.2, optimizer="sgd")
    assert LocalPhase.from_values(phase.to_values(3)) == phase
    assert isinstance(phase.build([torch.nn.Parameter(torch.zeros(1))]), torch.optim.SGD)
    with pytest.raises(ValueError):
        dataclasses.replace(phase, optimizer="rmsprop")
