"""ECOS: coverage scores, sensitivity, selection, protocol and ledger (tiny generated data)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings as hsettings, strategies as st

from cotrain.data.base import ArrayDataset
from cotrain.runtime.inprocess import InProcessGrid
from cotrain.sampling import (
    EcosClient, EcosSettings, EncoderConfig, allocate_budget, build_rule, encoder_hash, kcenter_greedy,
    load_encoder, prepare_cloud, random_encoder, run_ecos, save_encoder, score_weights, select_ecos,
)

CENTROIDS = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=np.float32)


def test_nearest_counts_hand_worked():
    # Prepare: 3 points near c0, 1 near c1, 0 near c2
    z = np.array([[0.1, 0.0], [0.0, -0.2], [1.0, 1.0], [9.0, 0.5]], dtype=np.float32)
    # Execute
    counts = build_rule("nearest").counts(z, CENTROIDS)
    # Assert
    np.testing.assert_array_equal(counts, [3, 1, 0])


def test_knearest_and_radius_counts_hand_worked():
    z = np.array([[0.1, 0.0], [9.0, 0.5]], dtype=np.float32)
    # 2 nearest: point 0 -> {c0, c1 or c2: c1 at 9.9, c2 at 10.0 -> c1}; point 1 -> {c1, c0}
    np.testing.assert_array_equal(build_rule("knearest", k=2).counts(z, CENTROIDS), [2, 2, 0])
    # radius 1.5: point 0 in ball 0, point 1 in ball 1; radius 11: every ball, capped at 2 nearest
    np.testing.assert_array_equal(build_rule("radius", radius=1.5).counts(z, CENTROIDS), [1, 1, 0])
    np.testing.assert_array_equal(build_rule("radius", radius=11.0, cap=2).counts(z, CENTROIDS), [2, 2, 0])
    np.testing.assert_array_equal(build_rule("radius", radius=20.0).counts(z, CENTROIDS), [2, 2, 2])


def test_sensitivities_derived():
    assert build_rule("nearest").sensitivity(50) == 1.0
    assert build_rule("knearest", k=4).sensitivity(50) == 2.0
    assert build_rule("radius", radius=1.0).sensitivity(49) == 7.0
    assert build_rule("radius", radius=1.0, cap=9).sensitivity(49) == 3.0


@hsettings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), rule=st.sampled_from(
    [("nearest", {}), ("knearest", {"k": 3}), ("radius", {"radius": 1.0}), ("radius", {"radius": 1.0, "cap": 2})]))
def test_adding_one_sample_moves_scores_by_at_most_sensitivity(seed, rule):
    # Prepare: random centroids and data, one extra sample
    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=(6, 3)).astype(np.float32)
    data = rng.normal(size=(20, 3)).astype(np.float32)
    extra = rng.normal(size=(1, 3)).astype(np.float32) * rng.uniform(0.1, 2)
    r = build_rule(rule[0], **rule[1])
    # Execute
    diff = r.counts(np.vstack([data, extra]), centroids) - r.counts(data, centroids)
    # Assert: the L2 change never exceeds the stated sensitivity
    assert np.linalg.norm(diff) <= r.sensitivity(6) + 1e-12
    if rule[0] == "knearest":  # and the bound is attained
        assert np.linalg.norm(diff) == pytest.approx(math.sqrt(3))


def test_kcenter_picks_far_apart_points():
    # Prepare: four corners of a square, each with near-duplicates, plus the centre
    corners = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=np.float64)
    dups = np.vstack([c + 0.01 * np.array([[1, 0], [0, 1]]) for c in corners])
    x = np.vstack([[[5.0, 5.0]], dups, corners])
    # Execute
    chosen = kcenter_greedy(x, 5)
    # Assert: starts at the centre (nearest the mean), then one point per corner, no two at one corner
    assert chosen[0] == 0
    picked = x[chosen[1:]]
    assert sorted(map(tuple, np.round(picked))) == sorted(map(tuple, corners))


def test_allocation_proportional_capped_thresholded():
    w = score_weights(np.array([6.0, 3.0, -2.0, 1.0]))
    np.testing.assert_array_equal(w, [6, 3, 0, 1])
    # 10 over weights 6:3:0:1 -> 6, 3, 0, 1
    np.testing.assert_array_equal(allocate_budget(w, np.array([100, 100, 100, 100]), 10).counts, [6, 3, 0, 1])
    # cluster 0 holds only 2: its excess 4 goes to clusters 1 and 3 by 3:1 -> 3 + 3, 1 + 1
    np.testing.assert_array_equal(allocate_budget(w, np.array([2, 100, 100, 100]), 10).counts, [2, 6, 0, 2])
    # threshold 2 removes cluster 3
    w2 = score_weights(np.array([6.0, 3.0, -2.0, 1.0]), threshold=2.0)
    np.testing.assert_array_equal(allocate_budget(w2, np.array([100] * 4), 9).counts, [6, 3, 0, 0])
    # all weights zero: follows cluster sizes, and says so
    a = allocate_budget(np.zeros(2), np.array([30, 10]), 4)
    assert a.fallback and list(a.counts) == [3, 1]


def test_softmax_temperature_weights():
    w = score_weights(np.array([0.0, math.log(3.0)]), temperature=1.0)
    np.testing.assert_allclose(w / w.sum(), [0.25, 0.75])


def _domain_images(n: int, seed: int) -> torch.Tensor:
    """A 'digit-like' domain: a bright bar on a dark background at random places."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 3, 8, 8)
    for i in range(n):
        r = int(torch.randint(1, 7, (1,), generator=g))
        x[i, :, r - 1:r + 1, 1:7] = 0.9
    return x


def _noise_images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _setup(budget=40, epsilon=math.inf, encoder="random", k=8, copy=False):
    client_x = _domain_images(60, 1)
    pool = torch.cat([client_x if copy else _domain_images(60, 2), _noise_images(140, 3)])  # 30 % in-domain
    s = EcosSettings(budget=budget, k=k, epsilon=epsilon, encoder=encoder, encoder_dim=8, encoder_width=4,
                     encoder_steps=30)
    cloud = prepare_cloud(pool, s, seed=0)
    client = EcosClient("client", ArrayDataset(x=client_x, y=torch.zeros(60, dtype=torch.int64)), seed=0)
    return s, cloud, client, InProcessGrid({"client": client})


def test_no_noise_scores_equal_exact_counts():
    s, cloud, client, grid = _setup()
    res = run_ecos(grid, cloud, s, client="client")
    # exact counts recomputed here from the client's data
    from cotrain.sampling import encode
    exact = build_rule("nearest").counts(encode(cloud.encoder, client.data.x), cloud.compression.centroids)
    np.testing.assert_array_equal(res.noisy_scores, exact)
    assert res.noisy_scores.sum() == 60 and res.epsilon == math.inf and grid.ledger.privacy == []


def test_ecos_selects_mostly_the_client_domain():
    # Prepare: the pool holds the client's own images (an exact copy, 30 %) and noise images
    s, cloud, client, grid = _setup(encoder="denoising", k=32, copy=True)
    # Execute
    res = run_ecos(grid, cloud, s, client="client")
    # Assert: no sample twice, and mostly the client's domain (the pool's share is 0.3)
    assert len(set(res.indices.tolist())) == 40
    assert float(np.mean(res.indices < 60)) >= 0.8


def test_ledger_shows_only_centroids_encoder_scores():
    s, cloud, client, grid = _setup()
    res = run_ecos(grid, cloud, s, client="client")
    kinds = {(e.direction, e.kind, e.payload) for e in grid.ledger.entries}
    assert kinds == {("down", "ecos_offer", "none"), ("up", "ecos_offer", "none"),
                     ("down", "ecos_encoder", "parameters"), ("up", "ecos_encoder", "none"),
                     ("down", "ecos_coverage", "statistics"), ("up", "ecos_coverage", "statistics")}
    up = [e for e in grid.ledger.entries if e.direction == "up"]
    assert [s for e in up for s in e.shapes] == [(8,)]  # only the score vector (K,)
    assert all(60 not in shape for e in grid.ledger.entries for shape in e.shapes)
    assert grid.ledger.raw_data_findings((3, 8, 8)) == []  # no image, no feature matrix crossed
    assert res.bytes_scores == 8 * 4 and res.bytes_centroids == 8 * 8 * 4 and res.bytes_encoder > 0


def test_encoder_not_resent_when_client_holds_it(tmp_path):
    s, cloud, client, grid = _setup()
    save_encoder(cloud.encoder, tmp_path / "phi.pt")
    client.encoder = load_encoder(tmp_path / "phi.pt")
    assert encoder_hash(client.encoder) == cloud.encoder_hash
    res = run_ecos(grid, cloud, s, client="client")
    assert res.bytes_encoder == 0 and "ecos_encoder" not in {e.kind for e in grid.ledger.entries}


def test_encoder_hash_changes_with_weights():
    a = random_encoder(EncoderConfig(dim=8, width=4, image_size=8), seed=0)
    b = random_encoder(EncoderConfig(dim=8, width=4, image_size=8), seed=0)
    c = random_encoder(EncoderConfig(dim=8, width=4, image_size=8), seed=1)
    assert encoder_hash(a) == encoder_hash(b) != encoder_hash(c)


def test_selection_ranks_clusters_and_has_no_duplicates():
    feats = np.random.default_rng(0).normal(size=(30, 2))
    assign = np.repeat([0, 1, 2], 10)
    idx, alloc = select_ecos(feats, assign, np.array([1.0, 5.0, 0.0]), 12)
    assert list(alloc.counts) == [2, 10, 0] and set(idx[:10]) == set(range(10, 20)) and len(set(idx)) == 12


def test_client_evaluates_a_model_and_returns_only_its_accuracy():
    # Prepare: a client whose test labels are all 0, and a model that always says 0
    from cotrain.models import build_model
    from cotrain.sampling import evaluate_at_client

    x = _domain_images(10, 4)
    test = ArrayDataset(x=x, y=torch.zeros(10, dtype=torch.int64), num_classes=2)
    client = EcosClient("client", test, seed=0, test=test)
    grid = InProcessGrid({"client": client})
    model = build_model("mlp", input_shape=(3, 8, 8), num_classes=2, seed=0, hidden=[4])
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([1.0, -1.0]))
    # Execute
    acc = evaluate_at_client(grid, model, client="client", model_name="mlp", options={"hidden": [4]}, round=0)
    # Assert
    assert acc == 1.0
    (up,) = [e for e in grid.ledger.entries if e.direction == "up"]
    assert up.tensor_names == () and up.bytes == 0


def test_private_knn_round_sends_only_answered_labels():
    # Prepare: the client's labelled data: two label groups, bars in the top or bottom half
    from cotrain.sampling import label_with_private_knn, share_encoder

    x = _domain_images(80, 5)
    y = (x[:, 0, :4].sum(dim=(1, 2)) > 0).long()  # 1: bar in the top half
    client = EcosClient("client", ArrayDataset(x=x, y=y, num_classes=2), seed=0)
    grid = InProcessGrid({"client": client})
    phi = random_encoder(EncoderConfig(dim=8, width=4, image_size=8), seed=0)
    share_encoder(grid, phi, client="client", round=0)
    from cotrain.sampling import encode
    queries = encode(phi, _domain_images(30, 6))
    # Execute: a low threshold answers some queries, an unreachable one answers none
    answered, labels, eps = label_with_private_knn(
        grid, queries, client="client", round=2,
        options={"sampling_rate": 0.9, "k": 10, "sigma1": 1.0, "threshold": 5.0, "sigma2": 1.0})
    none, _, eps_none = label_with_private_knn(
        grid, queries, client="client", round=3,
        options={"sampling_rate": 0.9, "k": 10, "sigma1": 1.0, "threshold": 1e6, "sigma2": 1.0})
    # Assert: labels only for answered queries, as (A,) tensors; nothing answered costs less
    up = [e for e in grid.ledger.entries if e.kind == "ecos_knn_label" and e.direction == "up"]
    assert up[0].shapes == ((len(answered),), (len(answered),)) and up[0].payload == "labels"
    assert 0 < len(answered) <= 30 and set(labels.tolist()) <= {0, 1} and len(none) == 0
    assert 0 < eps_none < eps
    assert grid.ledger.raw_data_findings((3, 8, 8)) == []
