"""cotrain.privacy: clipping, the Gaussian and Laplace mechanisms, accountants, calibration."""

import math

import dp_accounting as dpa
import pytest
import torch
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from hypothesis import given, settings
from hypothesis import strategies as st

from cotrain.errors import CotrainError, UnknownNameError
from cotrain.privacy import (ACCOUNTANTS, PrivacySpend, clip_l2, epsilon_of, gaussian_mechanism, laplace_mechanism,
                             noise_multiplier_for)
from cotrain.privacy.accountant import PLD_DISCRETIZATION

DELTA = 1e-5


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _gaussian_spend(sigma, *, q=1.0, count=1, party="p0", round=1):
    return PrivacySpend(round=round, party=party, mechanism="gaussian", noise_multiplier=sigma, sensitivity=1.0,
                        sampling_rate=q, count=count)


# -- clipping ----------------------------------------------------------------------------------
def test_clip_l2_scales_3_4_to_unit_norm():
    # Prepare
    v = torch.tensor([3.0, 4.0])
    # Execute
    clipped, norm = clip_l2(v, max_norm=1.0)
    # Assert: ||(3, 4)|| = 5, so the factor is 1/5
    assert norm == 5.0
    assert torch.allclose(clipped, torch.tensor([0.6, 0.8]))
    assert clipped.dtype == torch.float32


def test_clip_l2_leaves_a_short_vector_unchanged():
    v = torch.tensor([0.3, 0.4], dtype=torch.float64)
    clipped, norm = clip_l2(v, max_norm=1.0)
    assert norm == pytest.approx(0.5)
    assert torch.equal(clipped, v)


def test_clip_l2_of_a_mapping_uses_the_joint_norm():
    # Prepare: 3 in one tensor, 4 in the other -> joint norm 5; bound 2.5 halves both
    value = {"a": torch.tensor([3.0], dtype=torch.float64), "b": torch.tensor([[4.0]], dtype=torch.float64)}
    # Execute
    clipped, norm = clip_l2(value, max_norm=2.5)
    # Assert
    assert norm == 5.0
    assert list(clipped) == ["a", "b"]
    assert clipped["a"].tolist() == [1.5] and clipped["b"].tolist() == [[2.0]]


def test_clip_l2_rejects_integer_tensors_and_bad_bounds():
    with pytest.raises(CotrainError, match="only floating"):
        clip_l2({"w": torch.ones(2), "count": torch.tensor(3)}, max_norm=1.0)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(CotrainError, match="max_norm"):
            clip_l2(torch.ones(2), max_norm=bad)
    with pytest.raises(CotrainError, match="non-finite"):
        clip_l2(torch.tensor([1.0, math.inf]), max_norm=1.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=12), st.floats(1e-3, 1e3))
def test_clip_l2_bounds_the_norm_and_keeps_the_direction(values, max_norm):
    # Prepare
    v = torch.tensor(values, dtype=torch.float64)
    # Execute
    clipped, norm = clip_l2(v, max_norm=max_norm)
    # Assert: norm reported is the input's; output within the bound; a non-negative multiple of v
    assert norm == pytest.approx(math.hypot(*values), rel=1e-12)
    assert float(clipped.norm()) <= max_norm * (1 + 1e-12)
    factor = min(1.0, max_norm / norm) if norm > 0 else 1.0
    assert torch.allclose(clipped, v * factor, rtol=1e-12, atol=0)


# -- mechanisms --------------------------------------------------------------------------------
def test_gaussian_mechanism_noise_has_std_sigma_times_sensitivity():
    # Prepare: 200k coordinates; the sample std's relative standard error is 1/sqrt(2N) ~ 0.16%
    spends = []
    x = torch.zeros(200_000, dtype=torch.float64)
    # Execute
    y = gaussian_mechanism(x, sensitivity=2.0, noise_multiplier=1.5, generator=_gen(3), party="p1", round=4,
                           record=spends.append, release="update")
    # Assert: std 3 within 2%, mean 0 within 0.05; one spend with the stated parameters
    assert float(y.std()) == pytest.approx(3.0, rel=0.02)
    assert abs(float(y.mean())) < 0.05
    assert spends == [PrivacySpend(round=4, party="p1", mechanism="gaussian", noise_multiplier=1.5, sensitivity=2.0,
                                   sampling_rate=1.0, count=1, release="update")]


def test_laplace_mechanism_noise_has_scale_b():
    # Prepare
    spends = []
    x = torch.zeros(200_000, dtype=torch.float64)
    # Execute
    y = laplace_mechanism(x, sensitivity=0.5, noise_multiplier=4.0, generator=_gen(5), party="p1", round=2,
                          record=spends.append, release="counts")
    # Assert: b = 4 * 0.5 = 2; E|noise| = b, std = sqrt(2) b
    assert float(y.abs().mean()) == pytest.approx(2.0, rel=0.02)
    assert float(y.std()) == pytest.approx(math.sqrt(2) * 2.0, rel=0.02)
    assert len(spends) == 1 and spends[0].mechanism == "laplace" and spends[0].release == "counts"


def test_same_generator_seed_gives_the_same_noise_on_a_mapping():
    value = {"w": torch.zeros(3, 2), "b": torch.zeros(2)}
    kw = dict(sensitivity=1.0, noise_multiplier=1.0, party="p", round=1, record=lambda s: None)
    a = gaussian_mechanism(value, generator=_gen(7), **kw)
    b = gaussian_mechanism(value, generator=_gen(7), **kw)
    c = gaussian_mechanism(value, generator=_gen(8), **kw)
    assert all(torch.equal(a[k], b[k]) for k in value)
    assert not torch.equal(a["w"], c["w"])
    assert a["w"].dtype == torch.float32 and a["w"].shape == (3, 2)


@pytest.mark.parametrize("kwargs, name", [
    (dict(noise_multiplier=0.0), "noise_multiplier"),
    (dict(noise_multiplier=math.inf), "noise_multiplier"),
    (dict(sensitivity=-1.0), "sensitivity"),
    (dict(sampling_rate=0.0), "sampling_rate"),
    (dict(sampling_rate=1.5), "sampling_rate"),
    (dict(party=""), "party"),
    (dict(round=-1), "round"),
    (dict(generator=0), "generator"),
])
def test_gaussian_mechanism_rejects_bad_parameters_in_one_line(kwargs, name):
    spends = []
    args = dict(sensitivity=1.0, noise_multiplier=1.0, generator=_gen(), party="p", round=1, record=spends.append)
    args.update(kwargs)
    with pytest.raises(CotrainError, match=name) as err:
        gaussian_mechanism(torch.zeros(2), **args)
    assert "\n" not in str(err.value)
    assert spends == []  # nothing released, nothing recorded


@pytest.mark.parametrize("call, name", [
    (lambda: noise_multiplier_for(epsilon=-1.0, delta=DELTA), "epsilon"),
    (lambda: noise_multiplier_for(epsilon=1.0, delta=1.0), "delta"),
    (lambda: noise_multiplier_for(epsilon=1.0, delta=DELTA, sampling_rate=0.0), "sampling_rate"),
    (lambda: noise_multiplier_for(epsilon=1.0, delta=DELTA, compositions=0), "compositions"),
    (lambda: epsilon_of([_gaussian_spend(1.0)], delta=1.5), "delta"),
    (lambda: epsilon_of([_gaussian_spend(1.0)], delta=0.0), "delta"),
])
def test_calibration_and_accounting_reject_bad_parameters_in_one_line(call, name):
    with pytest.raises(CotrainError, match=name) as err:
        call()
    assert "\n" not in str(err.value)


# -- accountants -------------------------------------------------------------------------------
def test_accountants_are_registry_entries():
    assert {"pld", "rdp"} <= set(ACCOUNTANTS.names())
    with pytest.raises(UnknownNameError, match="accountant 'moments'"):
        epsilon_of([_gaussian_spend(1.0)], delta=DELTA, accountant="moments")


def test_gaussian_epsilon_equals_dp_accounting_pld_for_the_same_composition():
    # Prepare: 10 rounds of sigma = 1.1, recorded one spend a round
    spends = [_gaussian_spend(1.1, round=r) for r in range(1, 11)]
    reference = PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION).compose(
        dpa.GaussianDpEvent(1.1), 10).get_epsilon(DELTA)
    # Execute
    eps = epsilon_of(spends, delta=DELTA)
    # Assert: the same number as dp-accounting's; and close to its default discretisation and to
    # the analytic Gaussian (10 compositions of sigma = one of sigma / sqrt(10))
    assert eps == reference
    assert eps == pytest.approx(PLDAccountant().compose(dpa.GaussianDpEvent(1.1), 10).get_epsilon(DELTA), rel=1e-4)
    assert eps == pytest.approx(dpa.get_epsilon_gaussian(1.1 / math.sqrt(10), DELTA), rel=1e-3)


def test_subsampled_gaussian_epsilon_equals_dp_accounting_rdp():
    # Prepare: a private-kNN style account: 100 queries at sampling rate 0.05, recorded as 4 spends of 25
    spends = [_gaussian_spend(2.0, q=0.05, count=25, party="server", round=r) for r in range(4)]
    reference = RdpAccountant().compose(dpa.PoissonSampledDpEvent(0.05, dpa.GaussianDpEvent(2.0)), 100)
    # Execute
    eps = epsilon_of(spends, delta=DELTA, accountant="rdp")
    # Assert
    assert eps == reference.get_epsilon(DELTA)
    # amplification: the same 100 queries without subsampling cost more
    assert eps < epsilon_of([_gaussian_spend(2.0, count=100)], delta=DELTA, accountant="rdp")


def test_mixed_gaussian_and_laplace_compose_like_dp_accounting():
    spends = [_gaussian_spend(1.5), _gaussian_spend(1.5),
              PrivacySpend(round=2, party="p0", mechanism="laplace", noise_multiplier=3.0, sensitivity=2.0)]
    event = dpa.ComposedDpEvent([dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(1.5), 2), dpa.LaplaceDpEvent(3.0)])
    reference = PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION).compose(event).get_epsilon(DELTA)
    assert epsilon_of(spends, delta=DELTA) == reference


def test_no_spend_is_epsilon_zero_and_rdp_refuses_subsampled_laplace():
    assert epsilon_of([], delta=DELTA) == 0.0
    spend = PrivacySpend(round=1, party="p", mechanism="laplace", noise_multiplier=2.0, sensitivity=1.0,
                         sampling_rate=0.5)
    with pytest.raises(CotrainError, match="'rdp' cannot compose"):
        epsilon_of([spend], delta=DELTA, accountant="rdp")
    assert math.isfinite(epsilon_of([spend], delta=DELTA, accountant="pld"))


@pytest.mark.parametrize("accountant, epsilon, compositions, q", [("pld", 2.0, 10, 1.0), ("rdp", 3.0, 200, 0.1)])
def test_noise_multiplier_for_round_trips_through_epsilon_of(accountant, epsilon, compositions, q):
    # Execute
    sigma = noise_multiplier_for(epsilon=epsilon, delta=DELTA, compositions=compositions, sampling_rate=q,
                                 accountant=accountant)
    # Assert: the target is met, tightly, and 0.1% less noise misses it
    spends = [_gaussian_spend(sigma, q=q, count=compositions)]
    reached = epsilon_of(spends, delta=DELTA, accountant=accountant)
    assert epsilon * 0.995 <= reached <= epsilon
    less = [_gaussian_spend(sigma * 0.999, q=q, count=compositions)]
    assert epsilon_of(less, delta=DELTA, accountant=accountant) > epsilon
