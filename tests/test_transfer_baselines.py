"""The reference methods: ADDA centralised, source-only / target-supervised training, FedAvg of sources."""

import copy

import torch

from _transfer_fixtures import (SOURCE_BATCH, make_disc, make_model, make_sources, make_target_x, same, snapshot,
                                tiny_settings)
from cotrain.transfer import LocalPhase
from cotrain.transfer.baselines import adda_centralised, fedavg_sources, pool, train_supervised


def test_adda_trains_only_the_target_encoder() -> None:
    source = make_model()
    before = snapshot(source)
    target = adda_centralised(source, make_disc(), make_sources()["s1"].x, make_target_x(),
                              LocalPhase(3, batch_size=SOURCE_BATCH), seed=0)
    assert same(snapshot(source), before)                       # G_s and T untouched
    assert same(snapshot(target.head), snapshot(source.head))   # the target classifies with the source T
    assert not same(snapshot(target.blocks), snapshot(source.blocks))
    assert all(p.requires_grad for p in source.parameters())


def test_supervised_training_is_seeded() -> None:
    data = pool(list(make_sources(("s1", "s2")).values()))
    assert len(data) == 23 + 19
    phase = LocalPhase(3, batch_size=SOURCE_BATCH, lr=1e-2)
    a = train_supervised(make_model(), data, phase, seed=1)
    b = train_supervised(make_model(), data, phase, seed=1)
    assert same(snapshot(a), snapshot(b)) and not same(snapshot(a), snapshot(make_model()))


def test_fedavg_sources_is_the_pretraining_phase() -> None:
    sources = make_sources(("s1", "s2"))
    model = make_model()
    out = fedavg_sources(copy.deepcopy(model), make_disc(), sources, tiny_settings(), seed=0)
    assert not same(snapshot(out), snapshot(model))
    assert torch.isfinite(torch.cat([p.flatten() for p in out.parameters()])).all()
