"""The prior term of the feature reconstruction (``ReconstructionSettings.prior_weight``)."""

from dataclasses import replace

import pytest
import torch

from cotrain.audit import ReconstructionSettings, auxiliary_prior, reconstruct_features
from cotrain.audit.baselines import reconstruct_inputs
from cotrain.audit.feature_reconstruction import AUTO_PRIOR_SCALE, prior_term
from cotrain.audit.threat_model import simulate_upload
from cotrain.models import build_model


def tiny_problem(batch_size: int):
    """MLP 10 -> 6 -> 8 -> 3: the last block and head give 83 equations for ``6 B`` unknowns at X."""
    g = torch.Generator().manual_seed(0)
    model = build_model("mlp", input_shape=(10,), num_classes=3, seed=0, hidden=[6, 8])
    x, y = torch.randn(16, 10, generator=g), torch.arange(16) % 3
    prior = auxiliary_prior(model, torch.randn(60, 10, generator=g), torch.arange(60) % 3)
    return model, simulate_upload(model, x[:batch_size], y[:batch_size]), prior


def fingerprint(rec) -> list[float]:
    w = torch.arange(rec.features.numel(), dtype=torch.float32).reshape(rec.features.shape)
    return [rec.objective, float(rec.features.sum()), float((rec.features * w).sum()), float(rec.embeddings.sum())]


@pytest.mark.parametrize("restarts, expected", [
    # Printed by the code before the prior term existed (commit a55c69c), same problem, steps=40, seed 0.
    (1, [0.959837794303894, 20.843833923339844, 932.3482666015625, 11.417637825012207]),
    (2, [0.7019000053405762, 23.20012855529785, 1076.0645751953125, 12.578400611877441]),
])
def test_prior_weight_zero_reproduces_the_unregularised_method(restarts, expected):
    # Prepare: B = 16, so the counting bound is 83 / 96 < 1 and "auto" would switch the term on
    model, upload, prior = tiny_problem(16)
    settings = ReconstructionSettings(steps=40, restarts=restarts, prior_weight=0.0)
    # Execute
    rec = reconstruct_features(model, upload, prior=prior, settings=settings)
    again = reconstruct_features(model, upload, prior=prior, settings=settings)
    # Assert
    assert rec.prior_weight == 0.0
    assert fingerprint(rec) == pytest.approx(expected, rel=1e-5)
    assert torch.equal(rec.features, again.features)


def test_a_very_large_prior_weight_keeps_the_prior_start():
    # Prepare
    model, upload, prior = tiny_problem(16)
    start = reconstruct_features(model, upload, prior=prior, settings=ReconstructionSettings(steps=0)).features
    # Execute
    held = reconstruct_features(model, upload, prior=prior,
                                settings=ReconstructionSettings(steps=200, prior_weight=1e6)).features
    free = reconstruct_features(model, upload, prior=prior,
                                settings=ReconstructionSettings(steps=200, prior_weight=0.0)).features
    # Assert: the unregularised run moves far from the start, the heavily regularised one does not
    assert float(prior_term(held, start)) ** 0.5 < 1e-4
    assert float(prior_term(free, start)) ** 0.5 > 0.1


@pytest.mark.parametrize("batch_size", [1, 2, 13])
def test_auto_is_off_where_equations_outnumber_unknowns(batch_size):
    # Prepare: 83 equations for 6, 12, 78 unknowns
    model, upload, prior = tiny_problem(batch_size)
    # Execute
    auto = reconstruct_features(model, upload, prior=prior, settings=ReconstructionSettings(steps=30))
    off = reconstruct_features(model, upload, prior=prior, settings=ReconstructionSettings(steps=30, prior_weight=0))
    # Assert
    assert auto.equations_per_unknown >= 1
    assert auto.prior_weight == 0.0
    assert torch.equal(auto.features, off.features) and torch.equal(auto.embeddings, off.embeddings)


@pytest.mark.parametrize("batch_size", [14, 16])
def test_auto_is_on_where_unknowns_outnumber_equations(batch_size):
    # Prepare: 83 equations for 84, 96 unknowns
    model, upload, prior = tiny_problem(batch_size)
    # Execute
    auto = reconstruct_features(model, upload, prior=prior, settings=ReconstructionSettings(steps=30))
    off = reconstruct_features(model, upload, prior=prior, settings=ReconstructionSettings(steps=30, prior_weight=0))
    # Assert
    assert auto.equations_per_unknown < 1
    assert auto.prior_weight == pytest.approx(AUTO_PRIOR_SCALE / auto.equations_per_unknown) and auto.prior_weight > 1
    assert not torch.equal(auto.features, off.features)


def test_patent_preset_has_no_prior_term_and_bad_weights_are_refused():
    # Prepare
    model, upload, _ = tiny_problem(16)
    # Execute
    rec = reconstruct_features(model, upload, settings=ReconstructionSettings.patent(steps=3), feature_shape=(6,))
    # Assert
    assert ReconstructionSettings.patent().prior_weight == 0.0 and rec.prior_weight == 0.0
    with pytest.raises(ValueError, match="prior_weight"):
        ReconstructionSettings(prior_weight="on")
    with pytest.raises(ValueError, match="prior_weight"):
        ReconstructionSettings(prior_weight=-1.0)
    with pytest.raises(ValueError, match="init='auxiliary'"):
        ReconstructionSettings(init="random", prior_weight=1.0)


def test_input_reconstruction_estimates_a_missing_batch_size_or_names_the_estimator():
    # Prepare: B = 2 < K - 1 = 4, so B is read exactly from the rank of the head's gradient; metadata stripped
    g = torch.Generator().manual_seed(1)
    model = build_model("mlp", input_shape=(10,), num_classes=5, seed=0, hidden=[6, 8])
    x, y = torch.randn(2, 10, generator=g), torch.tensor([0, 2])
    blind = replace(simulate_upload(model, x, y), batch_size=None)
    aux = (torch.randn(60, 10, generator=g), torch.arange(60) % 5)
    # Execute
    x_hat, labels = reconstruct_inputs(model, blind, (10,), steps=2, aux=aux)
    # Assert
    assert x_hat.shape == (2, 10) and sorted(labels.tolist()) == [0, 2]
    with pytest.raises(ValueError, match="estimate_batch_size"):
        reconstruct_inputs(model, blind, (10,), steps=2)


def test_batch_property_per_sample_guess_needs_a_batch_size():
    # Prepare: a fitted batch-property regression and an upload whose metadata lacks B
    from cotrain.audit.baselines import BatchPropertyInference

    model, upload, _ = tiny_problem(4)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 10, generator=g), torch.arange(40) % 3
    attribute = torch.arange(40) % 2
    inference = BatchPropertyInference(num_batches=8, seed=0).fit(model, x, y, attribute, batch_size=4)
    # Execute / Assert: with B the guess has B entries; without it, a clear error names the estimator
    assert inference.predict_samples(model, upload).shape == (4,)
    with pytest.raises(ValueError, match="estimate_batch_size"):
        inference.predict_samples(model, replace(upload, batch_size=None))
