"""The membership game on noisy coverage scores: advantage against the exact value and the DP bound."""

import math

import pytest
import torch

from cotrain.errors import ConfigError
from cotrain.sampling.membership import advantage_bound, membership_advantage

COUNTS = torch.tensor([5.0, 0.0, 12.0, 3.0])
WITH_X = COUNTS + torch.tensor([0.0, 0.0, 1.0, 0.0])  # x's nearest centroid is the third


def test_huge_noise_leaves_no_advantage():
    r = membership_advantage(COUNTS, WITH_X, sigma=1e4, epsilon=1e-3, trials=20_000, seed=0)
    assert abs(r.advantage) < 0.03 and r.analytic_advantage < 1e-3
    assert r.bound == pytest.approx((math.exp(1e-3) - 1 + 2e-5) / (math.exp(1e-3) + 1))


def test_tiny_noise_gives_the_attacker_everything():
    r = membership_advantage(COUNTS, WITH_X, sigma=1e-3, epsilon=float("inf"), trials=2_000, seed=0)
    assert r.advantage == 1.0 and r.tpr == 1.0 and r.fpr == 0.0 and r.bound == 1.0


def test_measured_advantage_matches_the_exact_value():
    # sigma = 1, ||c1 - c0|| = 1: 2 Phi(1/2) - 1 = 0.38292...
    r = membership_advantage(COUNTS, WITH_X, sigma=1.0, epsilon=5.0, trials=40_000, seed=1)
    assert r.analytic_advantage == pytest.approx(0.382925, abs=1e-5)
    assert r.advantage == pytest.approx(r.analytic_advantage, abs=0.02)
    assert r.advantage <= r.bound


def test_same_seed_same_estimate():
    a = membership_advantage(COUNTS, WITH_X, sigma=2.0, epsilon=1.0, trials=500, seed=7)
    b = membership_advantage(COUNTS, WITH_X, sigma=2.0, epsilon=1.0, trials=500, seed=7)
    assert a == b and a.to_json()["trials"] == 500


def test_bound_hand_worked():
    # eps = ln 3, delta = 0: (3 - 1) / (3 + 1) = 1/2; delta adds 2 delta / (e^eps + 1)
    assert advantage_bound(epsilon=math.log(3.0), delta=0.0) == pytest.approx(0.5)
    assert advantage_bound(epsilon=math.log(3.0), delta=0.1) == pytest.approx(0.55)
    assert advantage_bound(epsilon=0.0, delta=0.0) == 0.0
    with pytest.raises(ConfigError):
        advantage_bound(epsilon=-1.0, delta=0.0)


def test_rejects_mismatched_counts():
    with pytest.raises(ConfigError):
        membership_advantage(COUNTS, torch.zeros(3), sigma=1.0, epsilon=1.0, seed=0)
