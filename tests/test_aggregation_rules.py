"""Each robust rule against hand-worked values on tiny inputs (the maths in each rule's docstring)."""

import math

import pytest
import torch

from cotrain.aggregation import Upload, build_aggregator
from cotrain.aggregation.base import AggregationError, RoundContext
from cotrain.errors import OptionsError, UnknownNameError


def rows(*values):
    return torch.tensor(values, dtype=torch.float64).reshape(len(values), -1)


def combine(name, x, weights=None, *, round=1, seed=0, agg=None, **options):
    agg = agg or build_aggregator(name, **options)
    w = torch.ones(x.shape[0], dtype=torch.float64) if weights is None else torch.tensor(weights, dtype=torch.float64)
    return agg.combine(x, w, [f"p{i}" for i in range(x.shape[0])], RoundContext(round=round, seed=seed))


def test_mean_weighted_is_fedavg_and_unweighted_is_the_average():
    # Prepare
    uploads = [Upload("a", {"w": torch.tensor([0.0])}, weight=1), Upload("b", {"w": torch.tensor([3.0])}, weight=2)]
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w = [3.0, 1.0, 7.0, 2.0, 2.0, 5.0]
    # Execute
    weighted = build_aggregator("mean")(uploads).tensors["w"].item()
    plain = build_aggregator("mean", weighted=False)(uploads).tensors["w"].item()
    # Assert: (1*0 + 2*3) / 3 = 2, (0 + 3) / 2 = 1.5, and bit for bit the fedavg rule
    assert (weighted, plain) == (2.0, 1.5)
    assert torch.equal(combine("mean", x, w).vector, combine("fedavg", x, w).vector)


def test_trimmed_mean_drops_one_per_side_per_coordinate():
    # Prepare: beta = 0.2 of 5 trims b = 1 per side
    x = rows([1, 10], [2, 20], [3, 30], [4, 40], [100, -5])
    # Execute
    out = combine("trimmed_mean", x, beta=0.2)
    # Assert: coordinate 0 keeps 2, 3, 4 -> 3; coordinate 1 keeps 10, 20, 30 -> 20
    assert out.vector.tolist() == [3.0, 20.0]
    # p0 trimmed in coordinate 0 only, p3 in coordinate 1 only, p4 in both; nobody excluded
    assert out.scores == {"p0": 0.5, "p1": 0.0, "p2": 0.0, "p3": 0.5, "p4": 1.0}
    assert out.excluded == [] and out.info == {"trimmed_per_side": 1.0}


def test_trimmed_mean_refuses_a_round_it_would_empty():
    with pytest.raises(AggregationError, match="nothing is left"):
        combine("trimmed_mean", rows([0], [1]), beta=0.49 + 0.01 - 1e-12)  # floor(0.5 * 2) = 1 per side


def test_krum_scores_and_choice():
    # Prepare: f = 1 of n = 5, so each score sums the n - f - 2 = 2 nearest squared distances
    x = rows([0], [1], [2], [3], [100])
    # Execute
    out = combine("krum", x, f=1)
    # Assert: p0 1+4, p1 1+1, p2 1+1, p3 1+4, p4 97^2+98^2; the tie p1/p2 goes to p1 (upload order)
    assert out.scores == {"p0": 5.0, "p1": 2.0, "p2": 2.0, "p3": 5.0, "p4": 97.0**2 + 98.0**2}
    assert out.vector.tolist() == [1.0] and out.weights == {"p1": 1.0}
    assert out.excluded == ["p0", "p2", "p3", "p4"]


def test_krum_needs_f_plus_three_uploads():
    with pytest.raises(AggregationError, match="at least f \\+ 3 = 5"):
        combine("krum", rows([0], [1], [2], [3]), f=2)


def test_multi_krum_averages_the_m_best():
    x = rows([0], [1], [2], [3], [100])
    # m = 3: p1, p2 (score 2) then p0 (5, before p3 in upload order) -> (1 + 2 + 0) / 3
    three = combine("multi_krum", x, f=1, m=3)
    # default m = n - f = 4 adds p3 -> (0 + 1 + 2 + 3) / 4
    four = combine("multi_krum", x, f=1)
    assert three.vector.tolist() == [1.0] and three.excluded == ["p3", "p4"]
    assert four.vector.tolist() == [1.5] and four.excluded == ["p4"]
    assert four.weights == {f"p{i}": 0.25 for i in range(4)}


def test_krum_returns_an_honest_upload_when_f_are_byzantine():
    # Prepare: 7 honest uploads near 0, f = 3 Byzantine ones colluding far away (n = 10 > 2f + 2)
    g = torch.Generator().manual_seed(3)
    honest = 0.1 * torch.randn(7, 20, dtype=torch.float64, generator=g)
    byzantine = 5.0 + 0.01 * torch.randn(3, 20, dtype=torch.float64, generator=g)
    x = torch.cat([byzantine, honest])
    # Execute
    out = combine("krum", x, f=3)
    # Assert: the output is one of the honest rows, exactly
    assert any(torch.equal(out.vector, h) for h in honest)
    assert {"p0", "p1", "p2"} <= set(out.excluded)


def test_geometric_median_hand_worked():
    # Equilateral triangle: the geometric median is the centroid (the Fermat point)
    tri = combine("geometric_median", rows([0, 0], [2, 0], [1, math.sqrt(3)]), tol=0.0, max_iter=200)
    assert tri.vector.tolist() == pytest.approx([1.0, math.sqrt(3) / 3], abs=1e-9)
    assert list(tri.scores.values()) == pytest.approx([2 / math.sqrt(3)] * 3, abs=1e-9)
    # Two points weighted 1 and 3: the weighted median is the heavier point
    heavy = combine("geometric_median", rows([0], [10]), [1.0, 3.0], tol=0.0, max_iter=500, eps=1e-9)
    assert heavy.vector.item() == pytest.approx(10.0, abs=1e-6)
    # Unweighted, the mean 5 is a fixed point of Weiszfeld (both distances equal)
    flat = combine("geometric_median", rows([0], [10]), [1.0, 3.0], weighted=False)
    assert flat.vector.item() == 5.0 and flat.weights == {"p0": 0.5, "p1": 0.5}


def test_centered_clipping_hand_worked_and_its_memory():
    # Prepare
    agg = build_aggregator("centered_clipping", tau=1.0, iters=1)
    # Execute: round 1 from v0 = 0: diffs 0.5, 3, -2 clip to 0.5, 1, -1 -> v = 0.5 / 3
    first = combine("", rows([0.5], [3.0], [-2.0]), agg=agg)
    # round 2 starts at 1/6: diffs 17/6 clip to 1 -> v = 1/6 + 1
    second = combine("", rows([3.0], [3.0], [3.0]), agg=agg, round=2)
    fresh = combine("centered_clipping", rows([3.0], [3.0], [3.0]), tau=1.0)
    # Assert
    assert first.vector.item() == pytest.approx(1 / 6) and first.info == {"clipped": 2.0}
    assert second.vector.item() == pytest.approx(7 / 6) and fresh.vector.item() == pytest.approx(1.0)
    # two steps: from 1/6 the diffs 1/3, 17/6, -13/6 clip to 1/3, 1, -1 -> 1/6 + (1/3) / 3
    two = combine("centered_clipping", rows([0.5], [3.0], [-2.0]), tau=1.0, iters=2)
    assert two.vector.item() == pytest.approx(5 / 18)


def test_fltrust_hand_worked_through_the_upload_path():
    # Prepare: global state 10, server update (1, 0); updates a = (2, 0), b = (1, 1), c = (-3, 0)
    ref = {"w": torch.tensor([10.0, 10.0], dtype=torch.float64)}
    ups = [Upload(p, {"w": ref["w"] + torch.tensor(u, dtype=torch.float64)})
           for p, u in (("a", [2.0, 0.0]), ("b", [1.0, 1.0]), ("c", [-3.0, 0.0]))]
    agg = build_aggregator("fltrust")
    # Execute
    out = agg(ups, reference=ref, server_upload={"w": ref["w"] + torch.tensor([1.0, 0.0], dtype=torch.float64)})
    # Assert: TS = 1, 1/sqrt2, 0; normalised a' = (1, 0), b' = (1, 1)/sqrt2 -> (1.5, 0.5) / (1 + 1/sqrt2)
    r = 1 / math.sqrt(2)
    assert agg.needs_server_upload
    assert (out.tensors["w"] - ref["w"]).tolist() == pytest.approx([1.5 / (1 + r), 0.5 / (1 + r)])
    assert out.scores == pytest.approx({"a": 1.0, "b": r, "c": 0.0}) and out.excluded == ["c"]
    assert out.weights == pytest.approx({"a": 1 / (1 + r), "b": r / (1 + r), "c": 0.0})


def test_fltrust_without_a_server_upload_or_trust():
    agg = build_aggregator("fltrust")
    with pytest.raises(AggregationError, match="server_upload"):
        agg([Upload("a", {"w": torch.tensor([1.0])})])
    out = agg([Upload("a", {"w": torch.tensor([-1.0])}), Upload("b", {"w": torch.tensor([-2.0])})],
              server_upload={"w": torch.tensor([1.0])})
    assert out.tensors["w"].item() == 0.0 and out.excluded == ["a", "b"]


def test_bucketing_means_of_seeded_buckets():
    # Prepare: 5 uploads in buckets of 2 -> sizes 2, 2, 1; the inner rule is the plain mean of the buckets
    x = rows([0.0], [1.0], [2.0], [4.0], [8.0])
    agg = build_aggregator("bucketing", bucket_size=2, rule="mean", options={"weighted": False})
    context = RoundContext(round=1, seed=7)
    buckets = agg.buckets(5, context)
    # Execute
    out = agg.combine(x, torch.ones(5, dtype=torch.float64), [f"p{i}" for i in range(5)], context)
    # Assert: a partition into sizes 2, 2, 1, fixed by (seed, round), re-drawn next round
    assert sorted(i for b in buckets for i in b) == [0, 1, 2, 3, 4] and [len(b) for b in buckets] == [2, 2, 1]
    assert agg.buckets(5, context) == buckets
    assert any(agg.buckets(5, RoundContext(round=r, seed=7)) != buckets for r in range(2, 6))
    expected = sum(sum(x[i].item() for i in b) / len(b) for b in buckets) / 3
    assert out.vector.item() == pytest.approx(expected)
    assert out.weights == pytest.approx({f"p{i}": 1 / 3 / len(b) for b in buckets for i in b})


def test_bucketing_maps_inner_exclusions_back_to_members():
    x = rows([0.0], [0.1], [0.2], [0.3], [50.0], [51.0])
    agg = build_aggregator("bucketing", bucket_size=1, rule="krum", options={"f": 1})
    out = combine("", x, agg=agg)
    # s = 1 only shuffles: Krum over the six uploads keeps one of the four near 0
    assert len(out.excluded) == 5 and out.vector.item() in (0.1, 0.2)
    assert set(out.scores) == {f"p{i}" for i in range(6)}


@pytest.mark.parametrize("name, options, message", [
    ("trimmed_mean", {"beta": 0.5}, "beta"), ("krum", {"f": -1}, "f must be"), ("krum", {"f": 1.0}, "f must be"),
    ("multi_krum", {"m": 0}, "m must be"), ("geometric_median", {"eps": 0.0}, "eps"),
    ("centered_clipping", {"tau": -1.0}, "tau"), ("centered_clipping", {"iters": 0}, "iters"),
    ("bucketing", {"bucket_size": 0}, "bucket_size"), 
    ("bucketing", {"rule": "krum", "options": {"g": 1}}, "unknown option"), ("mean", {"weighted": 1}, "weighted"),
    ("credit_groups", {"centre": "global"}, "centre"), ("credit_groups", {"eta": 0}, "eta"),
])
def test_bad_options_are_options_errors(name, options, message):
    with pytest.raises(OptionsError, match=message):
        build_aggregator(name, **options)


def test_bucketing_names_an_unknown_inner_rule():
    with pytest.raises(UnknownNameError, match="unknown aggregator 'medain'"):
        build_aggregator("bucketing", rule="medain")


def test_nnm_mixes_each_upload_with_its_nearest():
    # Prepare: f = 1 of 4, so each row becomes the mean of its 3 nearest (itself included)
    x = rows([0.0], [1.0], [3.0], [10.0])
    agg = build_aggregator("nnm", f=1, rule="mean", options={"weighted": False})
    # Execute
    mixed = agg.mix(x)
    out = combine("", x, agg=agg)
    # Assert: 0 -> (0+1+3)/3, 1 -> (1+0+3)/3, 3 -> (3+1+0)/3, 10 -> (10+3+1)/3
    assert mixed.reshape(-1).tolist() == pytest.approx([4 / 3, 4 / 3, 4 / 3, 14 / 3])
    assert out.vector.item() == pytest.approx((3 * 4 / 3 + 14 / 3) / 4)
