"""The ECOS digits pool on generated stand-ins for the real readers: each fake image is constant
with a value that encodes its source and index, so provenance survives the resize."""

import numpy as np
import pytest
import torch

from cotrain.data.base import ArrayDataset, DatasetSplits
from cotrain.errors import ConfigError
from cotrain.sampling import pool as P

# name -> (channels, side, n_train, n_test)
FAKE = {"mnist": (1, 28, 40, 12), "usps": (1, 16, 30, 10), "mnist_m": (3, 32, 20, 8), "cifar10": (3, 32, 9, 3),
        "dsprites": (1, 32, 7, 2), "utkface": (3, 32, 6, 2), "olivetti": (1, 64, 5, 2)}
CODE = {name: k for k, name in enumerate(FAKE)}


def _value(name, split, i):
    # source in the hundreds digit of 1/1000-ths, train/test and index below; all distinct, in (0, 1)
    return (CODE[name] * 100 + (50 if split == "test" else 0) + i + 1) / 1000.0


def _fake_load(name, *, data_dir=None):
    c, s, n_train, n_test = FAKE[name]

    def part(split, n):
        x = torch.tensor([_value(name, split, i) for i in range(n)]).view(n, 1, 1, 1).expand(n, c, s, s).clone()
        return ArrayDataset(x=x, y=torch.arange(n) % 10, name=name, num_classes=10)

    return DatasetSplits(train=part("train", n_train), test=part("test", n_test))


@pytest.fixture
def fake_readers(monkeypatch):
    monkeypatch.setattr(P, "load_dataset", _fake_load)


def _codes(x):
    return set(np.round(x[:, 0, 0, 0].numpy() * 1000).astype(int).tolist())


def test_client_half_and_pool_half_are_disjoint_and_cover_the_train_split(fake_readers):
    # Prepare / Execute: MNIST is the client (40 train, 12 test images in the fake)
    pool = P.build_digits_pool(None, "mnist", seed=1)
    mine = pool.pool_x[pool.in_domain]
    train_codes = {round(_value("mnist", "train", i) * 1000) for i in range(40)}
    # Assert: half each, disjoint, together the whole train split; the test split is the client's only
    assert len(pool.client_train) == 20 and int(pool.in_domain.sum()) == 20
    assert _codes(pool.client_train.x).isdisjoint(_codes(mine))
    assert _codes(pool.client_train.x) | _codes(mine) == train_codes
    assert _codes(pool.client_test.x) == {round(_value("mnist", "test", i) * 1000) for i in range(12)}
    assert _codes(pool.client_test.x).isdisjoint(_codes(pool.pool_x))


def test_every_source_is_tagged_and_ood_images_have_no_label(fake_readers):
    pool = P.build_digits_pool(None, "usps", seed=0)
    counts = {name: int((pool.pool_source == k).sum()) for k, name in enumerate(pool.source_names)}
    assert counts == {"mnist": 40, "usps": 15, "mnist_m": 20, "sklearn_digits": 1797, "cifar10": 9, "dsprites": 7,
                      "utkface": 6, "olivetti": 5}
    for k, name in enumerate(pool.source_names):
        src = pool.pool_source == k
        if name in P.OOD_SOURCES:
            assert (pool.pool_y[src] == -1).all()
        else:
            assert ((pool.pool_y[src] >= 0) & (pool.pool_y[src] < 10)).all()
        if name != "sklearn_digits":  # the fake's value tells the source apart
            assert {c // 100 for c in _codes(pool.pool_x[src])} == {CODE[name]}
    assert pool.pool_x.shape == (len(pool.pool_y), 3, 32, 32) and pool.client_train.x.shape[1:] == (3, 32, 32)
    assert pool.pool_x.min() >= 0 and pool.pool_x.max() <= 1
    # provenance: each pool image's index in its source's train split
    src = pool.pool_source == pool.source_names.index("mnist")
    assert sorted(pool.pool_index[src].tolist()) == list(range(40))


def test_caps_are_seeded_and_do_not_move_images_between_halves(fake_readers):
    full = P.build_digits_pool(None, "mnist_m", seed=2)
    capped = P.build_digits_pool(None, "mnist_m", seed=2, max_per_source=4, max_client_train=3, max_client_test=2)
    again = P.build_digits_pool(None, "mnist_m", seed=2, max_per_source=4, max_client_train=3, max_client_test=2)
    assert torch.equal(capped.pool_x, again.pool_x) and torch.equal(capped.client_train.x, again.client_train.x)
    assert len(capped.client_train) == 3 and len(capped.client_test) == 2
    assert all(int((capped.pool_source == k).sum()) == 4 for k in range(len(capped.source_names)))
    assert _codes(capped.client_train.x) <= _codes(full.client_train.x)
    assert _codes(capped.pool_x[capped.in_domain]) <= _codes(full.pool_x[full.in_domain])


def test_another_seed_cuts_the_client_domain_differently(fake_readers):
    a = P.build_digits_pool(None, "mnist", seed=1)
    b = P.build_digits_pool(None, "mnist", seed=2)
    assert _codes(a.client_train.x) != _codes(b.client_train.x)


def test_unknown_client_domain_is_refused(fake_readers):
    with pytest.raises(ConfigError):
        P.build_digits_pool(None, "svhn", seed=0)
    with pytest.raises(ConfigError):
        P.build_digits_pool(None, "mnist", seed=0, client_fraction=1.0)
