"""Batch-size estimation from an upload whose metadata lacks it (server side: model, gradient, aux data)."""

from dataclasses import replace

import pytest
import torch

from cotrain.audit import ReconstructionSettings, auxiliary_prior, estimate_batch_size, reconstruct_features
from cotrain.audit.api import audit_upload
from cotrain.audit.threat_model import simulate_upload
from cotrain.data.base import ArrayDataset
from cotrain.models import build_model

K = 10


def prototype_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 1x8x8 images of ``K`` classes: a fixed class prototype plus noise (``seed`` picks the samples)."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(K, 1, 8, 8, generator=torch.Generator().manual_seed(123))
    y = torch.randint(0, K, (n,), generator=g)
    return prototypes[y] + 0.5 * torch.randn(n, 1, 8, 8, generator=g), y


def blind_upload(model, x, y):
    """The participant's upload with the batch size stripped from its metadata."""
    return replace(simulate_upload(model, x, y), batch_size=None)


@pytest.mark.parametrize("batch_size", [1, 4, 8])
def test_batches_below_the_head_rank_limit_are_read_exactly(batch_size):
    # Prepare: K = 10 classes, so [dW | db] has rank min(B, 9); B = 1 is a rank-one gradient
    model = build_model("small_cnn", input_shape=(1, 8, 8), num_classes=K, seed=0, width=8)
    x_aux, y_aux = prototype_data(300, seed=100)
    uploads = [blind_upload(model, *prototype_data(batch_size, seed=s)) for s in range(3)]
    # Execute
    estimates = [estimate_batch_size(model, up, x_aux, y_aux) for up in uploads]
    # Assert
    assert [e.estimate for e in estimates] == [batch_size] * 3
    assert {e.method for e in estimates} == {"rank"}
    assert all(e.head_rank == batch_size and e.rank_limit == K - 1 for e in estimates)


@pytest.mark.parametrize("batch_size", [16, 64])
def test_larger_batches_estimated_within_a_factor_of_two(batch_size):
    # Prepare: untrained CNN, server holds 500 labelled aux samples of the same distribution.
    # Measured on this setting (3 model seeds x 10 batches, B = 16 and 64): B_hat / B in [0.56, 1.67].
    model = build_model("small_cnn", input_shape=(1, 8, 8), num_classes=K, seed=1, width=8)
    x_aux, y_aux = prototype_data(500, seed=1001)
    uploads = [blind_upload(model, *prototype_data(batch_size, seed=20 + s)) for s in range(4)]
    # Execute
    estimates = [estimate_batch_size(model, up, x_aux, y_aux) for up in uploads]
    # Assert: the rank saturates (B >= K - 1), so the noise-scale estimate decides
    assert {e.method for e in estimates} == {"noise_scale"}
    for e in estimates:
        assert batch_size / 2 <= e.estimate <= 2 * batch_size, (e.estimate, e.raw)
        assert abs(sum(e.class_proportions) - 1) < 1e-9 and e.aux_samples == 500


def test_audit_upload_estimates_a_missing_batch_size():
    # Prepare: a batch of 4 whose upload has no batch size in its metadata; the server's aux data
    model = build_model("small_cnn", input_shape=(1, 8, 8), num_classes=K, seed=0, width=4)
    x, y = prototype_data(4, seed=7)
    x_aux, y_aux = prototype_data(200, seed=8)
    aux = ArrayDataset(x=x_aux, y=y_aux, attributes={"flag": torch.arange(200) % 2}, name="aux", num_classes=K)
    settings = ReconstructionSettings(steps=5)
    # Execute
    blind = audit_upload(model, blind_upload(model, x, y), aux, attribute="flag", settings=settings)
    known = audit_upload(model, simulate_upload(model, x, y), aux, settings=settings)
    # Assert
    assert blind.batch_size_estimated and blind.batch_size == 4 and blind.batch_size_estimate.method == "rank"
    assert blind.features.shape[0] == 4 and blind.attribute_predictions.shape == (4,)
    assert sorted(blind.labels.tolist()) == sorted(y.tolist())
    assert not known.batch_size_estimated and known.batch_size == 4 and known.batch_size_estimate is None


def test_bad_input_gives_clear_errors(tiny_dataset):
    # Prepare
    model = build_model("small_cnn", input_shape=(1, 8, 8), num_classes=3, seed=0, width=4)
    up = blind_upload(model, tiny_dataset.x[:4], tiny_dataset.y[:4])
    empty = ArrayDataset(x=tiny_dataset.x[:0], y=tiny_dataset.y[:0], name="empty", num_classes=3)
    # Execute / Assert: no auxiliary data, no estimate
    with pytest.raises(ValueError, match="at least 2 labelled auxiliary samples"):
        estimate_batch_size(model, up, tiny_dataset.x[:0], tiny_dataset.y[:0])
    with pytest.raises(ValueError, match="auxiliary data set is empty"):
        audit_upload(model, up, empty)
    with pytest.raises(ValueError, match="max_batch_size"):
        estimate_batch_size(model, up, tiny_dataset.x[:50], tiny_dataset.y[:50], max_batch_size=0)
    # reconstruct_features called directly still needs B and says where to get it
    prior = auxiliary_prior(model, tiny_dataset.x[:50], tiny_dataset.y[:50])
    with pytest.raises(ValueError, match="estimate_batch_size"):
        reconstruct_features(model, up, prior=prior, settings=ReconstructionSettings(steps=1))
