"""The adversarial losses against their formulas (ADDA eqs. 7 and 9) and the discriminator's shapes."""

import math

import pytest
import torch

from cotrain.models import build_model
from cotrain.transfer import (adversarial_task_loss, build_discriminator, confusion_loss, discriminator_loss,
                              feature_dim)


def _log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.sigmoid(x))


def test_discriminator_loss_is_adda_eq7() -> None:
    ls, lt = torch.tensor([0.3, -1.2, 2.0]), torch.tensor([0.5, -0.7])
    expected = -_log_sigmoid(ls).mean() - torch.log(1 - torch.sigmoid(lt)).mean()
    assert torch.allclose(discriminator_loss(ls, lt), expected)
    assert torch.allclose(discriminator_loss(source_logits=ls), -_log_sigmoid(ls).mean())
    assert torch.allclose(discriminator_loss(target_logits=lt), -torch.log(1 - torch.sigmoid(lt)).mean())
    with pytest.raises(ValueError):
        discriminator_loss()


def test_confusion_loss_inverts_labels() -> None:
    logits = torch.tensor([0.1, -2.0, 3.0])
    assert torch.allclose(confusion_loss(logits, appear_as="source"), discriminator_loss(source_logits=logits))
    assert torch.allclose(confusion_loss(logits, appear_as="target"), discriminator_loss(target_logits=logits))
    # at D's indecision the loss is log 2 whichever side
    assert math.isclose(float(confusion_loss(torch.zeros(4), appear_as="target")), math.log(2), rel_tol=1e-6)
    with pytest.raises(ValueError):
        confusion_loss(logits, appear_as="elsewhere")
    with pytest.raises(ValueError):
        confusion_loss(logits.view(3, 1), appear_as="source")


def test_adversarial_task_loss_adds_weighted_confusion() -> None:
    task, y, dom = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0]), torch.randn(5)
    expected = torch.nn.functional.cross_entropy(task, y) + 0.3 * confusion_loss(dom, appear_as="target")
    assert torch.allclose(adversarial_task_loss(task, y, dom, weight=0.3), expected)


def test_discriminator_shapes_and_seed() -> None:
    d1, d2 = build_discriminator(12, hidden=(8, 8), seed=3), build_discriminator(12, hidden=(8, 8), seed=3)
    f = torch.randn(5, 12)
    assert d1(f).shape == (5,)
    assert torch.equal(d1(f), d2(f))
    with pytest.raises(ValueError):
        d1(torch.randn(5, 11))


def test_lenet_encoder_features() -> None:
    for shape in [(1, 28, 28), (3, 28, 28), (3, 32, 32)]:
        model = build_model("adda_lenet", input_shape=shape, num_classes=10, seed=0)
        assert feature_dim(model, shape) == 500
        assert model(torch.zeros(2, *shape)).shape == (2, 10)
