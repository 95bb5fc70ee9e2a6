"""The reconstruction's stopping rules (``ReconstructionSettings.stop``) and its objective's fast path."""

import math

import pytest
import torch

from cotrain.audit import ReconstructionSettings, reconstruct_features
from cotrain.audit.convergence import StopMonitor
from cotrain.audit.distance import gradient_distance
from cotrain.audit.feature_reconstruction import prior_term
from cotrain.audit.objective import PriorTerm, ReconstructionProblem
from cotrain.audit.threat_model import block_parameter_names, head_parameter_names, simulate_upload
from cotrain.errors import ConfigError
from cotrain.models import build_model

from test_audit_prior import tiny_problem  # MLP 10 -> 6 -> 8 -> 3: 83 equations for 6 B unknowns at X


def old_objective(net, upload, labels, x_hat, x0, anchor, mu, head_weight=0.1, anchor_weight=1.0):
    """The formula as written before the fast path: every constant recomputed from the raw tensors."""
    last, head = net.last_block_and_head()
    params = dict(net.named_parameters())
    bn, hn = block_parameter_names(net, -1), head_parameter_names(net)
    e = last(x_hat).reshape(len(labels), -1)
    ce = torch.nn.functional.cross_entropy(head(e), labels)
    grads = torch.autograd.grad(ce, [params[n] for n in bn + hn], create_graph=True)
    obj = gradient_distance([upload.gradients[n] for n in bn], grads[:len(bn)]) + \
        head_weight * gradient_distance([upload.gradients[n] for n in hn], grads[len(bn):])
    obj = obj + anchor_weight * gradient_distance(anchor, e) + mu * prior_term(x_hat, x0)
    return obj


@pytest.mark.parametrize("name, options, input_shape", [
    ("mlp", {"hidden": [6, 8]}, (10,)),
    ("small_cnn", {"width": 2}, (1, 8, 8)),
])
def test_fast_objective_equals_the_formula_with_constants_recomputed(name, options, input_shape):
    # Prepare: one upload of 5 samples, a start X_0, a moved X_hat, an anchor for E and a prior weight
    g = torch.Generator().manual_seed(3)
    model = build_model(name, input_shape=input_shape, num_classes=3, seed=0, **options)
    x, labels = torch.randn(5, *input_shape, generator=g), torch.tensor([0, 1, 2, 0, 1])
    upload = simulate_upload(model, x, labels)
    net = upload.shared_model(model)
    for p in net.parameters():
        p.requires_grad_(True)
    last, head = net.last_block_and_head()
    with torch.no_grad():
        x0 = net.features(torch.randn(5, *input_shape, generator=g), net.num_blocks - 1)
        anchor = last(x0 + 0.3).reshape(5, -1)
    params = dict(net.named_parameters())
    bn, hn = block_parameter_names(net, -1), head_parameter_names(net)
    problem = ReconstructionProblem(
        last=last, head=head, block_params=[params[n] for n in bn], head_params=[params[n] for n in hn],
        g_block=[upload.gradients[n] for n in bn], g_head=[upload.gradients[n] for n in hn], labels=labels,
        shape=tuple(x0.shape[1:]), num_classes=3, anchor=anchor, nonnegative=True, soft=False, prior_weight=2.5)
    x_hat = (x0 + 0.1 * torch.randn(x0.shape, generator=g)).requires_grad_(True)
    # Execute
    fast = problem.objective(x_hat, None, PriorTerm(x0))
    (fast_grad,) = torch.autograd.grad(fast, [x_hat])
    old = old_objective(net, upload, labels, x_hat, x0, anchor, 2.5)
    (old_grad,) = torch.autograd.grad(old, [x_hat])
    # Assert: same value and gradient; the same operations in the same order, so to the last bit
    assert float(old.detach()) > 0.01 and float(fast_grad.abs().max()) > 0
    assert torch.equal(fast.detach(), old.detach())
    assert torch.equal(fast_grad, old_grad)


def test_relative_change_stops_a_levelled_off_run_before_the_cap():
    # Prepare: B = 16 (83 equations, 96 unknowns): the prior term gives J a positive minimum, so the
    # absolute tolerance can never stop the run; 5000 steps and a 60 s cap would both be far off
    model, upload, prior = tiny_problem(16)
    common = dict(steps=5000, time_limit=60.0, window=50, rel_tol=1e-3, trace_every=1)
    # Execute
    rec = reconstruct_features(model, upload, prior=prior, settings=ReconstructionSettings(stop="relative_change",
                                                                                         **common))
    plain = reconstruct_features(model, upload, prior=prior,
                                 settings=ReconstructionSettings(stop="tolerance", **{**common, "steps": rec.steps + 60}))
    # Assert: it stopped by the criterion, early, within the cap, and the criterion holds at that step
    report = rec.restarts[0]
    assert rec.prior_weight > 0 and rec.stop_reason == "converged" and report.reason == "converged"
    assert 51 < report.steps < 5000 and report.wall_seconds < 60.0 and rec.steps == report.steps
    best = [min(v for _, v in report.trace[:i + 1]) for i in range(len(report.trace))]
    assert best[-51] - best[-1] < 1e-3 * best[-51]
    assert best[-52] - best[-2] >= 1e-3 * best[-52]  # and not one step earlier
    # the plain rule ran on along the same path (the criterion only decides when to stop)
    assert plain.restarts[0].reason == "max_steps" and plain.steps == rec.steps + 60
    assert plain.restarts[0].trace[:rec.steps] == report.trace
    assert plain.restarts[0].best_objective <= report.best_objective


def test_reports_every_restart_and_keeps_the_lowest_objective():
    # Prepare
    model, upload, prior = tiny_problem(16)
    settings = ReconstructionSettings(steps=25, restarts=3, trace_every=10)
    # Execute
    rec = reconstruct_features(model, upload, prior=prior, settings=settings)
    # Assert
    assert [r.restart for r in rec.restarts] == [0, 1, 2]
    assert all(r.reason == "max_steps" and r.steps == 25 for r in rec.restarts)
    assert all([s for s, _ in r.trace] == [10, 20, 25] for r in rec.restarts)
    assert all(r.cpu_seconds > 0 and r.wall_seconds > 0 for r in rec.restarts)
    objectives = [r.objective for r in rec.restarts]
    assert rec.best_restart == objectives.index(min(objectives)) and rec.objective == min(objectives)
    assert len(set(objectives)) == 3  # the restarts start from different auxiliary samples
    assert rec.restarts[0].to_dict()["trace"][-1] == [25, rec.restarts[0].objective]


def test_monitor_reasons_tolerance_and_time_cap():
    # Prepare
    tol = StopMonitor(rule="relative_change", tolerance=1e-3, window=5)
    capped = StopMonitor(time_limit=0.0)
    # Execute
    reasons = [tol.update(step, value) for step, value in enumerate([1.0, 0.5, 1e-4], start=1)]
    cap = capped.update(1, 1.0)
    # Assert
    assert reasons == [None, None, "tolerance"]
    assert cap == "time_cap" and capped.report(0, cap).reason == "time_cap"
    assert StopMonitor().report(0, None).reason == "max_steps" and math.isinf(StopMonitor().report(0, None).objective)


def test_bad_stop_settings_are_refused_in_one_line():
    for bad in ({"stop": "never"}, {"rel_tol": -1.0}, {"window": 0}, {"trace_every": 0}):
        with pytest.raises(ConfigError) as err:
            ReconstructionSettings(**bad)
        assert "\n" not in str(err.value)


def test_fused_adam_takes_the_same_steps_to_float_tolerance():
    # Prepare
    model, upload, prior = tiny_problem(16)
    # Execute
    plain = reconstruct_features(model, upload, prior=prior, settings=ReconstructionSettings(steps=30))
    fused = reconstruct_features(model, upload, prior=prior, settings=ReconstructionSettings(steps=30, fused_adam=True))
    start = reconstruct_features(model, upload, prior=prior, settings=ReconstructionSettings(steps=0))
    # Assert: both moved away from the start, to the same point up to rounding
    assert float((plain.features - start.features).abs().max()) > 1e-3
    assert fused.objective == pytest.approx(plain.objective, rel=1e-4)
    assert torch.allclose(fused.features, plain.features, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batch_size, rule", [(2, "tolerance"), (16, "relative_change")])
def test_auto_uses_the_relative_rule_only_where_the_prior_term_is_on(batch_size, rule):
    # Prepare: B = 2 (12 unknowns, 83 equations: mu = 0), B = 16 (96 unknowns: mu > 0)
    model, upload, prior = tiny_problem(batch_size)
    common = dict(steps=400, window=20, rel_tol=1e-2)
    # Execute
    auto = reconstruct_features(model, upload, prior=prior, settings=ReconstructionSettings(stop="auto", **common))
    same = reconstruct_features(model, upload, prior=prior, settings=ReconstructionSettings(stop=rule, **common))
    # Assert: "auto" behaves exactly as the rule it stands for on this upload
    assert (auto.prior_weight > 0) == (rule == "relative_change")
    assert auto.stop_reason == same.stop_reason and auto.steps == same.steps
    assert torch.equal(auto.features, same.features)
    assert auto.stop_reason in (("converged",) if rule == "relative_change" else ("tolerance", "max_steps"))
