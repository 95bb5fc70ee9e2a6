"""ECOS's noisy scores: the ledger's spend and the epsilon dp-accounting gives for that noise."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

pytest.importorskip("cotrain.privacy")

import dp_accounting  # noqa: E402
from dp_accounting.pld import pld_privacy_accountant  # noqa: E402

from cotrain.sampling import run_ecos  # noqa: E402
from test_sampling import _setup  # noqa: E402


def _dp_accounting_epsilon(noise_multiplier: float, delta: float) -> float:
    acc = pld_privacy_accountant.PLDAccountant()
    acc.compose(dp_accounting.GaussianDpEvent(noise_multiplier))
    return acc.get_epsilon(delta)


def test_ledger_spend_matches_dp_accounting():
    # Prepare
    s, cloud, client, grid = _setup(epsilon=1.0)
    # Execute
    res = run_ecos(grid, cloud, s, client="client")
    # Assert: one spend on the ledger, sensitivity 1 (nearest rule), from the client
    (spend,) = grid.ledger.spends_of("client")
    assert spend.sensitivity == 1.0 and spend.mechanism == "gaussian" and spend.release == "coverage_scores"
    expected = _dp_accounting_epsilon(spend.noise_multiplier, 1e-5)
    assert res.epsilon == pytest.approx(expected, rel=1e-2)
    assert expected <= 1.0 + 1e-6 and expected > 0.8  # calibrated to the requested epsilon
    assert not np.array_equal(res.noisy_scores, client.exact_scores)  # noise was added


def test_knearest_spend_states_sqrt_k():
    s, cloud, client, grid = _setup(epsilon=1.0)
    s = dataclasses.replace(s, rule="knearest", rule_options={"k": 4})
    run_ecos(grid, cloud, s, client="client")
    (spend,) = grid.ledger.spends_of("client")
    assert spend.sensitivity == pytest.approx(2.0)


def test_noise_multiplier_overrides_epsilon():
    s, cloud, client, grid = _setup(epsilon=1.0)
    res = run_ecos(grid, cloud, dataclasses.replace(s, noise_multiplier=5.0), client="client")
    (spend,) = grid.ledger.spends_of("client")
    assert spend.noise_multiplier == 5.0
    assert res.epsilon == pytest.approx(_dp_accounting_epsilon(5.0, 1e-5), rel=1e-2)
    assert math.isfinite(res.epsilon)
