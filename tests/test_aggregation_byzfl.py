"""The robust rules against ByzFL 0.0.11 (EPFL's reference implementations) on the same inputs.

ByzFL's package ``__init__`` imports its benchmark and federated framework, which pull torchvision
(broken on this torch): stub those two sub-packages first; skip cleanly if ByzFL still won't import.
Every input is float64 NumPy, so ByzFL computes in float64 too.
"""

import sys
import types

import numpy as np
import pytest
import torch

from cotrain.aggregation import build_aggregator
from cotrain.aggregation.base import RoundContext


def _import_byzfl():
    for name in ("byzfl.benchmark", "byzfl.fed_framework"):
        sys.modules.setdefault(name, types.ModuleType(name))
    try:
        import byzfl
    except Exception as err:  # a missing or broken install: skip, do not fail
        pytest.skip(f"byzfl does not import: {err}", allow_module_level=True)
    return byzfl


byzfl = _import_byzfl()


def inputs(n, d, seed, byzantine=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    x[:byzantine] = 8.0 + rng.normal(size=(byzantine, d))  # a far cluster
    return x


def ours(name, x, *, agg=None, round=1, seed=0, **options):
    agg = agg or build_aggregator(name, **options)
    ids = [f"p{i}" for i in range(len(x))]
    return agg.combine(torch.from_numpy(x), torch.ones(len(x), dtype=torch.float64), ids,
                       RoundContext(round=round, seed=seed)).vector.numpy()


@pytest.mark.parametrize("seed", range(3))
def test_mean_median_trimmed_mean(seed):
    x = inputs(11, 6, seed, byzantine=2)
    np.testing.assert_allclose(ours("mean", x, weighted=False), byzfl.Average()(x), rtol=1e-12)
    np.testing.assert_allclose(ours("median", x), byzfl.Median()(x), rtol=1e-12)  # odd n: one middle value
    for f in (0, 1, 3):
        np.testing.assert_allclose(ours("trimmed_mean", x, beta=f / 11), byzfl.TrMean(f=f)(x), rtol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_krum_and_multi_krum(seed):
    # ByzFL's Krum(f) uses the n - f - 1 nearest: its f + 1 is this library's f (see krum.py)
    x = inputs(12, 5, seed, byzantine=3)
    for f in (0, 2, 3):
        np.testing.assert_array_equal(ours("krum", x, f=f), byzfl.Krum(f=f + 1)(x))
        np.testing.assert_allclose(ours("multi_krum", x, f=f, m=12 - f - 1), byzfl.MultiKrum(f=f + 1)(x),
                                   rtol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_geometric_median_converged(seed):
    # different starts (the mean vs 0), the same smoothed objective: equal once both converge
    x = inputs(9, 4, seed, byzantine=2)
    reference = byzfl.GeometricMedian(nu=1e-9, T=3000)(x)
    np.testing.assert_allclose(ours("geometric_median", x, weighted=False, eps=1e-9, tol=0.0, max_iter=3000),
                               reference, atol=1e-6)  # Weiszfeld's tail is slow: 3000 steps reach ~1e-7


def test_centered_clipping_over_two_rounds():
    # both keep the last output as the next round's centre
    theirs = byzfl.CenteredClipping(tau=1.5, L=3)
    agg = build_aggregator("centered_clipping", tau=1.5, iters=3)
    for r, seed in enumerate((0, 1), start=1):
        x = inputs(8, 5, seed, byzantine=2)
        np.testing.assert_allclose(ours("", x, agg=agg, round=r), theirs(x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("inner, theirs", [("krum", lambda: byzfl.Krum(f=2)),
                                           ("mean", lambda: byzfl.Average())])
def test_bucketing_with_the_same_permutation(monkeypatch, inner, theirs):
    # Prepare: hand ByzFL's Bucketing the permutation this library draws (ByzFL uses the global RNG)
    x = inputs(11, 4, 4, byzantine=2)
    options = {"f": 1} if inner == "krum" else {"weighted": False}
    agg = build_aggregator("bucketing", bucket_size=2, rule=inner, options=options)
    context = RoundContext(round=3, seed=9)
    order = [i for bucket in agg.buckets(len(x), context) for i in bucket]
    pre = sys.modules["byzfl.aggregators.preaggregators"]  # byzfl's star imports shadow the attribute path
    monkeypatch.setattr(pre, "random_tool", lambda v: types.SimpleNamespace(permutation=lambda a: a[order]))
    # Execute
    means = byzfl.Bucketing(s=2)(x)
    # Assert: the same bucket means, then the same inner rule (Krum: ByzFL's f + 1 again)
    assert means.shape == (6, 4)
    np.testing.assert_allclose(ours("", x, agg=agg, round=3, seed=9), theirs()(means), rtol=1e-12)


@pytest.mark.parametrize("f", [0, 2, 3])
def test_nnm_then_trimmed_mean(f):
    x = inputs(10, 5, f, byzantine=3)
    mixed = byzfl.NNM(f=f)(x)
    np.testing.assert_allclose(build_aggregator("nnm", f=f).mix(torch.from_numpy(x)).numpy(), mixed, rtol=1e-12)
    np.testing.assert_allclose(ours("nnm", x, f=f, rule="trimmed_mean", options={"beta": 0.2}),
                               byzfl.TrMean(f=2)(mixed), rtol=1e-12)
