"""The patent's method (``credit_groups``) and the readings measured beside it (``credit_groups_robust``,
``credit_groups_direction``)."""

import pytest
import torch

from cotrain.aggregation import Upload, build_aggregator
from cotrain.aggregation.base import AggregationError, RoundContext
from cotrain.aggregation.rules._common import MAD_TO_SIGMA
from cotrain.aggregation.rules.credit_groups import draw_groups

RULES = ("credit_groups", "credit_groups_robust")


def run(name, x, weights, groups=None, *, round=1, seed=0, **options):
    ids = [f"p{i}" for i in range(x.shape[0])]
    context = RoundContext(round=round, seed=seed, groups={} if groups is None else dict(zip(ids, groups)))
    return build_aggregator(name, **options).combine(x, torch.tensor(weights, dtype=torch.float64), ids, context)


def symmetric_group(centre, axes=(0, 1)):
    """Four rows centre +- e_a, centre +- e_b: the coordinate-wise median is the centre, every distance 1."""
    c = torch.tensor(centre, dtype=torch.float64)
    e = torch.eye(3, dtype=torch.float64)
    return torch.stack([c + e[axes[0]], c - e[axes[0]], c + e[axes[1]], c - e[axes[1]]])


@pytest.mark.parametrize("name", RULES)
def test_all_honest_with_equal_scores_is_fedavg(name):
    # Prepare: two server-set groups around one centre, every distance (to a group's median and to
    # the round's) 1, so every score 1; unequal example counts
    x = torch.cat([symmetric_group([1.0, 2.0, 3.0]), symmetric_group([1.0, 2.0, 3.0], axes=(2, 0))])
    w = [1.0, 5.0, 2.0, 7.0, 3.0, 3.0, 10.0, 1.0]
    # Execute
    out = run(name, x, w, groups=[0, 0, 0, 0, 1, 1, 1, 1])
    fedavg = run("fedavg", x, w)
    # Assert: the example-weighted mean, nobody excluded, every score 1
    assert torch.allclose(out.vector, fedavg.vector, rtol=0, atol=1e-12)
    assert out.excluded == [] and set(out.scores.values()) == {1.0}
    assert out.weights == pytest.approx(fedavg.weights)


def test_examples_influence_with_equal_scores_gives_each_client_the_same_share_of_its_group():
    # lambda_i = n_i: s_i = |G| n_i / N_G, so n_i * eta / s_i = N_G / |G| for everyone in the group
    x = symmetric_group([0.0, 0.0, 0.0]) + torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    out = run("credit_groups", torch.cat([x, x]), [1.0, 5.0, 2.0, 7.0] * 2, groups=[0] * 4 + [1] * 4,
              influence="examples")
    assert torch.allclose(out.vector, x.mean(dim=0), atol=1e-12)


def test_literal_formulas_on_a_hand_worked_two_group_example():
    # Prepare: group 0 = p0, p1, p2 at 0, 1, 3 with n = 1, 2, 1; group 1 = p3, p4 at 10, 12 with n = 1, 1
    x = torch.tensor([[0.0], [1.0], [3.0], [10.0], [12.0]], dtype=torch.float64)
    # Execute
    out = run("credit_groups", x, [1.0, 2.0, 1.0, 1.0, 1.0], groups=[0, 0, 0, 1, 1])
    # Assert, group 0: median 1, distances 1, 0, 2, their median D = 1 -> c = 1, 0.1 (the floor), 2
    assert [out.scores[p] for p in ("p0", "p1", "p2")] == pytest.approx([1.0, 0.1, 2.0])
    # s_i = 3 c_i / 3.1, so eta / s_i = 3.1 / (3 c_i); U_0 = (1*0 + 2*(31/3)*1 + 1*(3.1/6)*3) / 4
    u0 = (2 * (31 / 3) * 1 + (3.1 / 6) * 3) / 4
    # group 1: median 11, distances 1, 1 -> c = 1, 1, s = 1, U_1 = 11; global (4 U_0 + 2 U_1) / 6
    assert out.vector.item() == pytest.approx((4 * u0 + 2 * 11.0) / 6)
    # thresholds: group 0 median 1 + 3 * 1.4826 * MAD 0.9; group 1 median 1 + 0; nobody is above
    assert out.info["threshold:g0"] == pytest.approx(1 + 3 * MAD_TO_SIGMA * 0.9)
    assert out.info["threshold:g1"] == pytest.approx(1.0) and out.excluded == []
    assert [out.info[f"group:p{i}"] for i in range(5)] == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert out.weights["p1"] == pytest.approx(2 * (31 / 3) / 6)  # the literal step amplifies p1 tenfold


@pytest.mark.parametrize("name", RULES + ("credit_groups_direction",))
def test_a_planted_outlier_is_excluded(name):
    # Prepare: 19 honest updates around a common direction and one planted 50 times as far
    g = torch.Generator().manual_seed(5)
    honest = 0.3 + 0.05 * torch.randn(19, 40, dtype=torch.float64, generator=g)
    x = torch.cat([honest[:7], 50 * honest[7:8], honest[7:]])
    # Execute
    out = run(name, x, [10.0] * 20, seed=11)
    # Assert
    assert "p7" in out.excluded
    if name != "credit_groups":
        # only the outlier goes, and the rest lands near the honest mean (capped steps damp the
        # honest members riskier than their group's average a little) while FedAvg is far off
        def error(v):
            target = honest.mean(dim=0)
            return float(torch.linalg.vector_norm(v - target) / torch.linalg.vector_norm(target))

        assert out.excluded == ["p7"]
        assert error(out.vector) < 0.05 and error(run("fedavg", x, [10.0] * 20).vector) > 1.0


def test_literal_reading_amplifies_the_honest_steps_of_an_outliers_group():
    # Prepare: group 0 = four honest (scores 1) and an outlier 100 units out; group 1 = four honest
    x = torch.cat([symmetric_group([1.0, 1.0, 1.0]), torch.tensor([[100.0, 1.0, 1.0]], dtype=torch.float64),
                   symmetric_group([1.0, 1.0, 1.0])])
    groups = [0] * 5 + [1] * 4
    # Execute
    literal = run("credit_groups", x, [1.0] * 9, groups=groups)
    robust = run("credit_groups_robust", x, [1.0] * 9, groups=groups)
    # Assert: both exclude the outlier; the literal s_i still sums over it, so its group's honest
    # steps grow by (4 + 99) / 5 and the aggregate leaves the honest mean (1, 1, 1) far behind
    assert literal.excluded == robust.excluded == ["p4"]
    assert literal.vector.tolist() == pytest.approx([(4 * 103 / 5 + 4) / 8] * 3)
    assert robust.vector.tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_round_centre_resists_a_colluding_group_majority():
    # Prepare: group 0 = three colluders sending the same update and two honest; group 1 = five honest
    g = torch.Generator().manual_seed(2)
    honest = 0.1 * torch.randn(7, 30, dtype=torch.float64, generator=g)
    colluders = torch.full((3, 30), 2.0, dtype=torch.float64)
    x = torch.cat([colluders, honest])
    groups = [0] * 5 + [1] * 5
    # Execute
    literal = run("credit_groups", x, [1.0] * 10, groups=groups)
    robust = run("credit_groups_robust", x, [1.0] * 10, groups=groups)
    # Assert: the group's own median is the colluders', so the literal rule keeps them and drops
    # the two honest members; against the round's median the colluders are the outliers
    assert {"p3", "p4"} <= set(literal.excluded) and not {"p0", "p1", "p2"} & set(literal.excluded)
    assert robust.excluded == ["p0", "p1", "p2"]


def test_groups_are_redrawn_each_round_from_the_seed():
    ids = [f"p{i}" for i in range(22)]
    first = draw_groups(ids, group_size=5, seed=3, round=1)
    sizes = sorted(list(first.values()).count(g) for g in set(first.values()))
    assert sizes == [5, 5, 6, 6]  # max(2, 22 // 5) = 4 near-equal groups
    assert draw_groups(ids, group_size=5, seed=3, round=1) == first
    assert draw_groups(ids, group_size=5, seed=3, round=2) != first
    assert set(draw_groups(ids[:3], group_size=5, seed=3, round=1).values()) == {0, 1}  # at least two groups


def test_server_set_groups_are_used_and_must_cover_every_upload():
    agg = build_aggregator("credit_groups")
    ups = [Upload(f"p{i}", {"w": torch.tensor([float(i)])}, group=i % 2) for i in range(4)]
    out = agg(ups)
    assert out.info["groups"] == 2.0
    with pytest.raises(AggregationError, match="grouped some uploads"):
        agg([Upload("a", {"w": torch.tensor([0.0])}, group=0), Upload("b", {"w": torch.tensor([1.0])})])


def synthetic_round(seed, attack, n=20, f=6, d=500):
    """Non-IID honest updates (5 label-skew clusters, uneven noise and example counts), the first f replaced."""
    g = torch.Generator().manual_seed(seed)
    mu = 0.1 * torch.randn(d, dtype=torch.float64, generator=g)
    drift = 0.1 * torch.randn(5, d, dtype=torch.float64, generator=g)
    noise = (0.5 + torch.rand(n, 1, dtype=torch.float64, generator=g)) * 0.05
    x = mu + drift[torch.arange(n) % 5] + noise * torch.randn(n, d, dtype=torch.float64, generator=g)
    w = torch.randint(20, 200, (n,), generator=g).to(torch.float64)
    h = x[f:]
    if attack == "none":
        return x, w, (w @ x) / w.sum()
    bad = {"sign": -x[:f], "scale": 10 * x[:f], "noise": torch.randn(f, d, dtype=torch.float64, generator=g),
           "ipm100": -100 * h.mean(dim=0).repeat(f, 1), "alie": (h.mean(dim=0) - 0.674 * h.std(dim=0)).repeat(f, 1)}
    target = (w[f:] @ h) / w[f:].sum()
    return torch.cat([bad[attack], h]), w, target


def test_the_robust_reading_has_the_smaller_worst_case_on_synthetic_updates():
    # Prepare: 30 % attackers, five attacks, eight rounds each; error = |aggregate - honest FedAvg| / |honest FedAvg|
    worst = {}
    for name in RULES:
        errors = []
        for attack in ("sign", "scale", "noise", "ipm100", "alie"):
            for seed in range(8):
                x, w, target = synthetic_round(seed, attack)
                # Execute
                out = run(name, x, w.tolist(), seed=seed, round=seed + 1)
                errors.append(float(torch.linalg.vector_norm(out.vector - target) / torch.linalg.vector_norm(target)))
        worst[name] = max(errors)
    # Assert: the literal reading is thrown far off by some attack; the re-reading stays near
    assert worst["credit_groups_robust"] < 0.5 < worst["credit_groups"]


def test_the_upload_path_with_a_reference_and_an_integer_tensor():
    # Prepare: parameter uploads (a weight, a bias, BatchNorm's counter) around a global state
    g = torch.Generator().manual_seed(8)
    ref = {"w": torch.randn(3, 2, generator=g), "b": torch.zeros(2), "n": torch.tensor(4)}
    ups = [Upload(f"p{i}", {"w": ref["w"] + 0.01 * torch.randn(3, 2, generator=g),
                            "b": 0.01 * torch.randn(2, generator=g), "n": torch.tensor(9)}, weight=10 + i)
           for i in range(10)]
    ups[3] = Upload("p3", {"w": ref["w"] + 5.0, "b": torch.full((2,), 5.0), "n": torch.tensor(9)}, weight=13)
    # Execute
    out = build_aggregator("credit_groups_robust")(ups, reference=ref, seed=1, round=2)
    # Assert: the planted upload is out, shapes and dtypes kept, the counter copied from the first upload
    assert "p3" in out.excluded
    assert out.tensors["w"].shape == (3, 2) and out.tensors["w"].dtype == torch.float32
    assert out.tensors["n"].item() == 9 and float((out.tensors["w"] - ref["w"]).abs().max()) < 0.05


def test_the_robust_reading_keeps_honest_clients_without_an_attack():
    # Prepare / Execute: 20 honest non-IID clients, 20 rounds
    names = RULES + ("credit_groups_direction",)
    excluded = {name: 0 for name in names}
    for name in names:
        for seed in range(20):
            x, w, target = synthetic_round(seed, "none")
            out = run(name, x, w.tolist(), seed=seed, round=seed + 1)
            excluded[name] += len(out.excluded)
    # Assert: the goal, at most 5 % of honest clients excluded with no attack
    assert excluded["credit_groups_robust"] / 400 <= 0.05
    assert excluded["credit_groups_direction"] / 400 <= 0.05


def shell_of_clients(d=10, f=1):
    """Non-IID honest updates x_i = 0.5 e_0 + r_i e_i (r_i from 0.8 to 1.2, each along its own axis) and
    f sign-flipped copies of honest rows: a flipped row is about as far from the median as an honest one."""
    r = torch.linspace(0.8, 1.2, d - 1, dtype=torch.float64)
    honest = 0.5 * torch.eye(d, dtype=torch.float64)[0] + r[:, None] * torch.eye(d, dtype=torch.float64)[1:]
    return torch.cat([-honest[:f], honest])


def test_the_direction_score_is_hand_worked_on_one_axis():
    # Prepare: 1-D updates 1, 2, 3, -2; round median 1.5, its unit vector +1
    x = torch.tensor([[1.0], [2.0], [3.0], [-2.0]], dtype=torch.float64)
    # Execute
    direction = run("credit_groups_direction", x, [1.0] * 4, groups=[0, 0, 1, 1], score="direction")
    both = run("credit_groups_direction", x, [1.0] * 4, groups=[0, 0, 1, 1])
    # Assert: unit distances 0, 0, 0, 2; their median is 0, so the scale is their mean 0.5 and the
    # scores 0 (floored to 0.1), 0.1, 0.1, 4
    assert [direction.scores[f"p{i}"] for i in range(4)] == pytest.approx([0.1, 0.1, 0.1, 4.0])
    # distances to 1.5: 0.5, 0.5, 1.5, 3.5 over their median 1 -> "both" = max = 0.5, 0.5, 1.5, 4
    assert [both.scores[f"p{i}"] for i in range(4)] == pytest.approx([0.5, 0.5, 1.5, 4.0])
    # round threshold: median 1 + 3 * 1.4826 * MAD 0.5 = 3.22 < 4
    assert both.excluded == ["p3"]


def test_the_direction_score_excludes_a_sign_flip_the_distance_score_keeps():
    # Prepare: 9 honest non-IID clients and one flipped copy of the first honest row
    x = shell_of_clients()
    # Execute
    distance = run("credit_groups_robust", x, [1.0] * 10, seed=4)
    direction = run("credit_groups_direction", x, [1.0] * 10, seed=4, min_cosine=None)  # the score alone
    # Assert: the flipper's distance score is under the threshold, its direction score far above
    assert distance.excluded == []
    assert direction.excluded == ["p0"]
    assert direction.scores["p0"] > 1.4 > max(direction.scores[f"p{i}"] for i in range(1, 10))


def test_the_larger_of_the_two_scores_still_sees_a_scaled_update():
    # Prepare: the honest shell plus one honest row scaled 20-fold: its direction is an honest one
    x = shell_of_clients(f=0)
    x = torch.cat([20 * x[:1], x[1:]])
    # Execute
    direction_only = run("credit_groups_direction", x, [1.0] * 9, seed=4, score="direction")
    both = run("credit_groups_direction", x, [1.0] * 9, seed=4)
    # Assert: the unit-vector score alone keeps it, the max excludes it
    assert "p0" not in direction_only.excluded
    assert both.excluded == ["p0"]


def test_the_direction_reading_equals_fedavg_when_every_score_is_equal():
    # rows centre +- e_1, centre +- e_2 around (3, 0, 0): equal distances and equal angles to the median
    x = torch.cat([symmetric_group([3.0, 0.0, 0.0], axes=(1, 2))] * 2)
    w = [1.0, 5.0, 2.0, 7.0, 3.0, 3.0, 10.0, 1.0]
    out = run("credit_groups_direction", x, w, groups=[0] * 4 + [1] * 4)
    fedavg = run("fedavg", x, w)
    assert out.excluded == [] and len(set(round(v, 12) for v in out.scores.values())) == 1
    assert torch.allclose(out.vector, fedavg.vector, rtol=0, atol=1e-12)


def test_min_cosine_excludes_an_update_against_the_round_median():
    # Prepare: the shell of 9 honest clients and one flipped copy (cosine to the median -0.447)
    x = shell_of_clients()
    # Execute
    plain = run("credit_groups_robust", x, [1.0] * 10, seed=4)
    gated = run("credit_groups_robust", x, [1.0] * 10, seed=4, min_cosine=0.0)
    # Assert: the distance score keeps it, the cosine gate drops it and nobody else
    assert plain.excluded == [] and gated.excluded == ["p0"]
    cos = build_aggregator("credit_groups_robust").cosines(x, [list(range(10))])
    assert float(cos[0]) == pytest.approx(-0.5 / (0.25 + 0.8 ** 2) ** 0.5)


def test_min_cosine_is_not_applied_when_it_would_exclude_everyone():
    # rows +-e_0, +-e_1: the median is 0, every cosine 0 and every distance score 1
    x = symmetric_group([0.0, 0.0, 0.0])
    assert run("credit_groups_robust", x, [1.0] * 4, min_cosine=0.5).excluded == []
    assert run("credit_groups_robust", x, [1.0] * 4, min_cosine=0.0).excluded == []
