"""Attacks on benign statistics (ALIE, IPM, min-max, adaptive): their formulas, on the attacker's
own simulated honest updates."""

import math

import pytest
import torch

from _attack_fixtures import participant, train_request, update, wrapped
from cotrain.behaviours import build_attack
from cotrain.behaviours.attacks.adaptive import mad_threshold
from cotrain.behaviours.attacks.alie import alie_z
from cotrain.behaviours.attacks.min_max import min_max_gamma
from cotrain.errors import ConfigError
from cotrain.runtime.message import Message

F32 = dict(atol=1e-6, rtol=1e-5)


def _simulated_benign(data, request, m):
    """The m updates the attacker should use, rebuilt independently: its real honest update and
    the replies of a fresh copy of the participant to requests whose round is -(1000 r + j)."""
    r = int(request.values["round"])
    rows = [update(participant(data).handle(request), request)]
    for j in range(1, m):
        copy = Message(request.kind, tensors=dict(request.tensors), payload=request.payload,
                       values={**request.values, "round": -(1000 * r + j)})
        rows.append(update(participant(data).handle(copy), request))
    return torch.stack(rows)


@pytest.mark.parametrize("n,f,expected", [
    (20, 6, 0.6744897501960817),   # s = 11 - 6 = 5, Phi^-1(15/20) = Phi^-1(0.75)
    (50, 24, 1.7506860712521692),  # s = 26 - 24 = 2, Phi^-1(48/50) = Phi^-1(0.96)
    (10, 0, -0.2533471031357997),  # s = 6, Phi^-1(0.4): no attackers, a shift towards the mean
])
def test_alie_z_is_baruch_et_als_formula(n, f, expected):
    assert alie_z(n, f) == pytest.approx(expected, abs=1e-12)


def test_alie_z_refuses_a_majority_of_attackers():
    with pytest.raises(ConfigError, match="s = -1"):
        alie_z(10, 7)


def test_alie_sends_mean_minus_z_std_of_its_honest_estimate(tiny_dataset):
    # Prepare: n = 5, f = 2 in the fixture's context -> s = 1, z = Phi^-1(4/5)
    request = train_request(round=2)
    benign = _simulated_benign(tiny_dataset, request, 4)
    z = alie_z(5, 2)
    # Execute
    sent = update(wrapped(build_attack("alie", honest_samples=4), tiny_dataset).handle(request), request)
    # Assert
    assert z == pytest.approx(0.8416212335729143, abs=1e-12)
    assert float(benign.std(0).max()) > 1e-4  # the simulated updates differ
    torch.testing.assert_close(sent, benign.mean(0) - z * benign.std(0, unbiased=True), **F32)


@pytest.mark.parametrize("epsilon", [0.1, 100.0])
def test_ipm_sends_minus_epsilon_times_the_estimated_mean(tiny_dataset, epsilon):
    # Prepare
    request = train_request()
    benign = _simulated_benign(tiny_dataset, request, 3)
    # Execute
    sent = update(wrapped(build_attack("ipm", epsilon=epsilon, honest_samples=3), tiny_dataset).handle(request),
                  request)
    # Assert
    torch.testing.assert_close(sent, -epsilon * benign.mean(0), atol=1e-6 * epsilon, rtol=1e-5)


def test_honest_simulation_leaves_the_participant_state_as_it_was(tiny_dataset):
    # Prepare
    request = train_request()
    honest = participant(tiny_dataset)
    honest.handle(request)
    attacked = wrapped(build_attack("ipm", honest_samples=3), tiny_dataset)
    # Execute
    attacked.handle(request)
    # Assert: round counter and last batch as after one honest round
    a, b = attacked.get_state(), honest.get_state()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_unbound_estimating_attack_says_what_it_needs(tiny_dataset):
    # Prepare
    attack = build_attack("alie")
    request = train_request()
    reply = participant(tiny_dataset).handle(request)
    # Execute / Assert
    with pytest.raises(ConfigError, match="bind"):
        attack.on_reply(reply, request, wrapped(build_attack("sign_flip"), tiny_dataset).context)


def test_min_max_gamma_on_a_hand_worked_pair():
    # benign (0,0), (2,0): mu = (1,0), p = unit vector (1,0), bound = max pairwise distance 2;
    # u' = (1 - g, 0) is |1 - g| and |1 + g| from them, so the largest g is 1.
    benign = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    gamma = min_max_gamma(benign, torch.tensor([1.0, 0.0], dtype=torch.float64), gamma_init=10.0, tolerance=1e-7)
    assert gamma == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("direction", ["unit_vec", "std", "sign"])
def test_min_max_lands_on_the_bound_of_its_estimate(tiny_dataset, direction):
    # Prepare
    request = train_request()
    benign = _simulated_benign(tiny_dataset, request, 4)
    bound = float(torch.cdist(benign, benign).max())
    attack = build_attack("min_max", direction=direction, honest_samples=4)
    # Execute
    sent = update(wrapped(attack, tiny_dataset).handle(request), request)
    # Assert: as far from the benign updates as they are from each other (to the search's tolerance), not further
    far = float((benign - sent).norm(dim=1).max())
    assert far <= bound * (1 + 1e-5) and far >= bound * 0.999
    assert attack.last_gamma > 0


def test_mad_threshold_hand_worked():
    # scores 1, 2, 3, 10: torch's median is the lower middle, 2; |d - 2| = 1, 0, 1, 8 -> MAD 1
    assert mad_threshold(torch.tensor([1.0, 2.0, 3.0, 10.0]), kappa=1.0, mad_scale=1.0) == 3.0


def test_adaptive_lands_at_threshold_times_one_minus_margin_against_the_centre(tiny_dataset):
    # Prepare
    request = train_request()
    benign = _simulated_benign(tiny_dataset, request, 3)
    centre = benign.median(0).values
    attack = build_attack("adaptive", threshold=0.5, margin=0.1, honest_samples=3)
    # Execute
    sent = update(wrapped(attack, tiny_dataset).handle(request), request)
    # Assert: 0.45 from the estimated centre, straight against it
    step = sent - centre
    assert float(step.norm()) == pytest.approx(0.45, rel=1e-5)
    assert float(torch.nn.functional.cosine_similarity(step, centre, dim=0)) == pytest.approx(-1.0, abs=1e-6)


def test_adaptive_with_the_mad_rule_stays_inside_its_estimated_threshold(tiny_dataset):
    # Prepare
    request = train_request()
    benign = _simulated_benign(tiny_dataset, request, 4)
    centre = benign.median(0).values
    scores = (benign - centre).norm(dim=1)
    threshold = mad_threshold(scores, kappa=2.0, mad_scale=1.4826)
    attack = build_attack("adaptive", kappa=2.0, margin=0.2, honest_samples=4)
    # Execute
    sent = update(wrapped(attack, tiny_dataset).handle(request), request)
    # Assert
    assert math.isfinite(threshold) and threshold > 0
    assert float((sent - centre).norm()) == pytest.approx(0.8 * threshold, rel=1e-5)


def test_adaptive_orthogonal_steps_perpendicular_to_the_centre(tiny_dataset):
    # Prepare: against a rule with a cosine gate the attacker must not point away from the centre
    request = train_request()
    benign = _simulated_benign(tiny_dataset, request, 3)
    centre = benign.median(0).values
    attack = build_attack("adaptive", threshold=0.5, margin=0.1, direction="orthogonal", honest_samples=3)
    # Execute
    sent = update(wrapped(attack, tiny_dataset).handle(request), request)
    # Assert: 0.45 from the centre, at a right angle to it, so the upload's cosine to it is positive
    step = sent - centre
    assert float(step.norm()) == pytest.approx(0.45, rel=1e-5)
    assert abs(float(torch.nn.functional.cosine_similarity(step, centre, dim=0))) < 1e-5
    assert float(torch.nn.functional.cosine_similarity(sent, centre, dim=0)) == pytest.approx(
        float(centre.norm() / (centre.norm() ** 2 + 0.45 ** 2).sqrt()), rel=1e-4)
