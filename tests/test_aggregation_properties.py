"""Properties of the robust rules (hypothesis): permutation invariance, the coordinate-wise hull,
translation equivariance, and that the rules keep FedAvg's answer on identical uploads."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cotrain.aggregation import build_aggregator
from cotrain.aggregation.base import RoundContext

# rules whose answer does not depend on the upload order (continuous inputs: no ties)
ORDER_FREE = [("mean", {}), ("median", {}), ("trimmed_mean", {"beta": 0.2}), ("krum", {"f": 1}),
              ("multi_krum", {"f": 1}), ("geometric_median", {}), ("centered_clipping", {"tau": 1.0}),
              ("fltrust", {}), ("nnm", {"f": 2})]
# rules that commute with adding one vector t to every upload
EQUIVARIANT = [("mean", {}), ("median", {}), ("trimmed_mean", {"beta": 0.2}), ("krum", {"f": 1}),
               ("multi_krum", {"f": 1}), ("geometric_median", {"tol": 1e-12, "max_iter": 300})]

cases = st.tuples(st.integers(5, 9), st.integers(1, 6), st.integers(0, 10_000))


def data(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, dtype=torch.float64, generator=g)
    x[0] *= 20  # one far upload so the robust parts of each rule act
    w = torch.randint(1, 50, (n,), generator=g).to(torch.float64)
    return x, w, torch.randn(d, dtype=torch.float64, generator=g)


def apply(name, options, x, w, server=None):
    context = RoundContext(round=1, seed=0, server_row=server)
    return build_aggregator(name, **options).combine(x, w, [f"p{i}" for i in range(len(x))], context)


@pytest.mark.parametrize("name, options", ORDER_FREE)
@settings(max_examples=25, deadline=None)
@given(case=cases)
def test_permutation_invariance(name, options, case):
    x, w, server = data(*case)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(case[2]))
    a, b = apply(name, options, x, w, server), apply(name, options, x[perm], w[perm], server)
    assert torch.allclose(a.vector, b.vector, rtol=1e-9, atol=1e-9)
    # the ids stay in place while the rows move: row i of x is row argsort(perm)[i] of x[perm]
    ids = [f"p{i}" for i in range(len(x))]
    where = torch.argsort(perm).tolist()
    assert [b.scores.get(ids[j]) for j in where] == pytest.approx([a.scores.get(i) for i in ids])


@pytest.mark.parametrize("name, options", [("median", {}), ("trimmed_mean", {"beta": 0.1}),
                                           ("trimmed_mean", {"beta": 0.4})])
@settings(max_examples=40, deadline=None)
@given(case=cases)
def test_inside_the_coordinate_wise_hull(name, options, case):
    x, w, _ = data(*case)
    out = apply(name, options, x, w).vector
    assert bool((out >= x.min(dim=0).values).all()) and bool((out <= x.max(dim=0).values).all())


@pytest.mark.parametrize("name, options", EQUIVARIANT)
@settings(max_examples=25, deadline=None)
@given(case=cases)
def test_translation_equivariance(name, options, case):
    x, w, t = data(*case)
    t = 100 * t
    assert torch.allclose(apply(name, options, x + t, w).vector, apply(name, options, x, w).vector + t,
                          rtol=1e-9, atol=1e-7)


@pytest.mark.parametrize("name", ["trimmed_mean", "krum", "multi_krum", "geometric_median", "centered_clipping",
                                  "credit_groups", "credit_groups_robust", "credit_groups_direction", "bucketing",
                                  "nnm"])
@settings(max_examples=10, deadline=None)
@given(case=cases)
def test_identical_uploads_give_that_upload(name, case):
    # a robust rule must not move an agreement (centered clipping: tau large enough to reach it in one step)
    n, d, seed = case
    row = torch.randn(d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    options = {"tau": 1e6} if name == "centered_clipping" else {}
    out = apply(name, options, row.repeat(n, 1), torch.ones(n, dtype=torch.float64))
    assert torch.allclose(out.vector, row, rtol=1e-12, atol=1e-12)
    if name not in ("krum", "multi_krum"):  # the Krums keep m uploads by design
        assert out.excluded == []
