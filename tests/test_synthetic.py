"""The generated data set: shapes, determinism, independence and visibility of attributes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency

from cotrain.data import load_dataset, make_synthetic


@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_shapes_and_ranges(channels: int, size: int) -> None:
    s = make_synthetic(n_train=300, n_test=100, channels=channels, size=size, num_domains=4)
    assert tuple(s.train.x.shape) == (300, channels, size, size) and len(s.test) == 100
    assert s.train.x.dtype == torch.float32 and s.train.y.dtype == torch.int64
    assert 0.0 <= float(s.train.x.min()) and float(s.train.x.max()) <= 1.0
    assert s.train.num_classes == 10 and np.bincount(s.train.y.numpy()).tolist() == [30] * 10
    assert set(s.train.domain.tolist()) == {0, 1, 2, 3}
    assert set(s.train.attributes) == {"thickness", "marker"}
    assert all(v.dtype == torch.int64 for v in s.train.attributes.values())


def test_determinism() -> None:
    a = make_synthetic(n_train=200, n_test=50, seed=5)
    b = load_dataset("synthetic", n_train=200, n_test=50, seed=5)
    c = make_synthetic(n_train=200, n_test=50, seed=6)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert torch.equal(a.train.attributes["marker"], b.train.attributes["marker"])
    assert not torch.equal(a.train.x, c.train.x)
    # the test set does not depend on how many training samples were asked for
    d = make_synthetic(n_train=400, n_test=50, seed=5)
    assert torch.equal(a.test.x, d.test.x)


def test_attributes_independent_of_label_and_domain() -> None:
    s = make_synthetic(n_train=5000, n_test=10, num_domains=3, seed=0).train
    y = s.y.numpy()
    for name, values in s.attributes.items():
        v = values.numpy()
        assert 0.45 < v.mean() < 0.55, name
        for other in (y, s.domain.numpy()):
            table = np.zeros((other.max() + 1, 2))
            np.add.at(table, (other, v), 1)
            assert chi2_contingency(table).pvalue > 1e-3, name


def test_label_and_attributes_are_visible_in_pixels() -> None:
    s = make_synthetic(n_train=2500, n_test=10, num_domains=1, seed=1).train
    x, y = s.x.reshape(len(s), -1), s.y
    centroids = torch.stack([x[:2000][y[:2000] == c].mean(0) for c in range(10)])
    nearest = torch.cdist(x[2000:], centroids).argmin(1)
    assert (nearest == y[2000:]).float().mean() > 0.4  # class templates, well above 0.1 chance
    corner = s.x[:, 0, 1:4, 1:4].mean(dim=(1, 2))
    marker = s.attributes["marker"].bool()
    assert ((corner > 0.5) == marker).float().mean() > 0.9
    thick = s.attributes["thickness"].bool()
    ink = s.x.mean(dim=(1, 2, 3))
    assert ink[thick].mean() > ink[~thick].mean() + 0.02


def test_domains_differ_in_style() -> None:
    s = make_synthetic(n_train=600, n_test=10, num_domains=2, seed=2).train
    means = [float(s.x[s.domain == d].mean()) for d in (0, 1)]
    assert means[1] > means[0] + 0.3  # domain 1 inverts contrast: light background


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="channels"):
        make_synthetic(channels=2)
    with pytest.raises(ValueError, match="unknown option"):
        load_dataset("synthetic", colour=True)
