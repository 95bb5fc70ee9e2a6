"""Data-time attacks: label flipping and the BadNets backdoor change exactly what they say."""

import pytest
import torch

from _attack_fixtures import context, train_request, update, wrapped, participant
from cotrain.behaviours import build_attack
from cotrain.behaviours.attacks.backdoor import apply_trigger
from cotrain.errors import OptionsError


def test_label_flip_maps_y_to_c_minus_1_minus_y(tiny_dataset):
    # Execute
    flipped = build_attack("label_flip").on_data(tiny_dataset, context())
    # Assert: 3 classes: 0 <-> 2, 1 stays; inputs untouched
    assert torch.equal(flipped.y, 2 - tiny_dataset.y)
    assert torch.equal(flipped.x, tiny_dataset.x) and flipped.num_classes == 3


def test_label_flip_with_a_permutation(tiny_dataset):
    flipped = build_attack("label_flip", permutation=[1, 2, 0]).on_data(tiny_dataset, context())
    assert torch.equal(flipped.y, torch.tensor([1, 2, 0])[tiny_dataset.y])


def test_label_flip_rejects_a_non_permutation(tiny_dataset):
    with pytest.raises(OptionsError, match="each of 0..2 once"):
        build_attack("label_flip", permutation=[0, 0, 1]).on_data(tiny_dataset, context())


def test_apply_trigger_sets_the_bottom_right_patch_only():
    # Prepare
    x = torch.zeros(2, 3, 6, 6)
    # Execute
    out = apply_trigger(x, patch=2, value=0.7)
    # Assert: 2 x 2 pixels of each of 3 channels, nothing else; the input is not modified
    assert torch.all(out[..., 4:, 4:] == 0.7) and float(out.sum()) == pytest.approx(2 * 3 * 4 * 0.7)
    assert float(x.abs().sum()) == 0.0


@pytest.mark.parametrize("fraction", [0.25, 1.0])
def test_backdoor_poisons_the_stated_fraction_with_trigger_and_target(tiny_dataset, fraction):
    # Prepare
    attack = build_attack("backdoor", target=1, fraction=fraction, patch=2, value=5.0)
    # Execute
    poisoned = attack.on_data(tiny_dataset, context())
    # Assert: exactly round(fraction * 200) samples carry the trigger (5.0 is outside the data's range)
    stamped = (poisoned.x[:, :, -2:, -2:] == 5.0).flatten(1).all(1)
    assert int(stamped.sum()) == round(fraction * 200) == len(attack.poisoned)
    assert torch.equal(torch.nonzero(stamped).flatten(), attack.poisoned)
    assert torch.all(poisoned.y[stamped] == 1)
    assert torch.equal(poisoned.y[~stamped], tiny_dataset.y[~stamped])
    assert torch.equal(poisoned.x[~stamped], tiny_dataset.x[~stamped])


def test_backdoor_choice_is_seeded_per_participant(tiny_dataset):
    a = build_attack("backdoor", fraction=0.2)
    b = build_attack("backdoor", fraction=0.2)
    c = build_attack("backdoor", fraction=0.2)
    a.on_data(tiny_dataset, context("p0"))
    b.on_data(tiny_dataset, context("p0"))
    c.on_data(tiny_dataset, context("p1"))
    assert torch.equal(a.poisoned, b.poisoned) and not torch.equal(a.poisoned, c.poisoned)


def test_backdoor_triggered_set_is_the_other_classes_stamped_and_relabelled(tiny_dataset):
    # Prepare
    attack = build_attack("backdoor", target=0, patch=2, value=5.0)
    # Execute
    test = attack.triggered(tiny_dataset)
    # Assert: 200 samples, 67 of class 0 (0, 3, ..., 198) left out
    assert len(test) == 200 - 67
    assert torch.all(test.y == 0) and torch.all(test.x[:, :, -2:, -2:] == 5.0)


def test_backdoor_with_boost_scales_the_poisoned_update(tiny_dataset):
    # Prepare: the same poisoned data, boost 1 (data poisoning) and 3 (model replacement)
    request = train_request()
    plain = wrapped(build_attack("backdoor", fraction=0.5), tiny_dataset).handle(request)
    boosted = wrapped(build_attack("backdoor", fraction=0.5, boost=3.0), tiny_dataset).handle(request)
    honest = participant(tiny_dataset).handle(request)
    # Assert
    torch.testing.assert_close(update(boosted, request), 3.0 * update(plain, request), atol=1e-6, rtol=1e-5)
    assert not torch.equal(update(plain, request), update(honest, request))


def test_backdoor_rejects_a_target_outside_the_classes(tiny_dataset):
    with pytest.raises(OptionsError, match="0..2"):
        build_attack("backdoor", target=3).on_data(tiny_dataset, context())
