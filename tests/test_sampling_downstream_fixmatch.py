"""FixMatch's loss on hand-worked logits, and the FixMatch / supervised loops on a tiny toy task."""

import math

import pytest
import torch
from torch import nn

from cotrain.data.base import ArrayDataset
from cotrain.errors import ConfigError
from cotrain.sampling.fixmatch import BatchSampler, accuracy, fixmatch_loss, train_fixmatch, train_supervised


def _hand_logits():
    labelled = torch.zeros(1, 2, requires_grad=True)  # CE with y = 0: ln 2
    weak = torch.tensor([[math.log(99.0), 0.0], [0.0, 0.0]], requires_grad=True)  # p = (.99, .01), (.5, .5)
    strong = torch.tensor([[0.0, 0.0], [5.0, 0.0]], requires_grad=True)
    return labelled, torch.tensor([0]), weak, strong


def test_fixmatch_loss_hand_worked():
    # Prepare: the first unlabelled image is confident (0.99 >= 0.95, pseudo-label 0), the second not
    lab, y, weak, strong = _hand_logits()
    # Execute
    loss, st = fixmatch_loss(lab, y, weak, strong, threshold=0.95, lambda_u=2.0)
    # Assert: L = ln 2 + 2 * (ln 2 + 0) / 2: the masked image counts as zero in the mean over both
    assert loss.item() == pytest.approx(2 * math.log(2.0), rel=1e-6)
    assert st["loss_x"] == pytest.approx(math.log(2.0), rel=1e-6)
    assert st["loss_u"] == pytest.approx(math.log(2.0) / 2, rel=1e-6)
    assert st["mask_rate"] == 0.5
    assert st["pseudo_labels"].tolist() == [0, 0] and st["mask"].tolist() == [True, False]


def test_fixmatch_loss_gives_no_gradient_through_the_weak_view():
    lab, y, weak, strong = _hand_logits()
    loss, _ = fixmatch_loss(lab, y, weak, strong)
    loss.backward()
    assert weak.grad is None
    # the confident image's strong logits are pulled towards its pseudo-label 0; the masked one is not touched
    assert strong.grad[0, 0].item() < 0 and torch.equal(strong.grad[1], torch.zeros(2))


def test_fixmatch_loss_threshold_one_is_supervised_only():
    lab, y, weak, strong = _hand_logits()
    loss, st = fixmatch_loss(lab, y, weak, strong, threshold=1.0)
    assert loss.item() == pytest.approx(math.log(2.0), rel=1e-6) and st["mask_rate"] == 0.0


def test_fixmatch_loss_rejects_mismatched_views():
    lab, y, weak, _ = _hand_logits()
    with pytest.raises(ConfigError):
        fixmatch_loss(lab, y, weak, torch.zeros(3, 2))


def test_batch_sampler_covers_each_pass_without_repeats():
    s = BatchSampler(10, 4, torch.Generator().manual_seed(0))
    drawn = torch.cat([s.next() for _ in range(5)])  # two and a half passes
    assert sorted(drawn[:10].tolist()) == list(range(10)) and sorted(drawn[10:20].tolist()) == list(range(10))


def _toy(n, seed):
    """Two classes of 1x8x8 images: a bright left half or a bright right half, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.zeros(n, 1, 8, 8)
    x[y == 0, :, :, :4] = 0.8
    x[y == 1, :, :, 4:] = 0.8
    x = (x + 0.1 * torch.randn(n, 1, 8, 8, generator=g)).clamp(0, 1)
    return ArrayDataset(x=x, y=y, num_classes=2)


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 2))


def test_train_fixmatch_learns_the_toy_task_and_is_reproducible():
    # Prepare: 4 labelled images, 128 unlabelled ones, a tiny MLP
    labelled, unl, test = _toy(4, 0), _toy(128, 1), _toy(200, 2)
    runs = []
    for _ in range(2):
        model = _model()
        # Execute
        stats = train_fixmatch(model, labelled, unl.x, steps=40, batch_size=4, mu=4, lr=0.1, seed=3,
                               threshold=0.7, log_every=10, unlabelled_y=unl.y)
        runs.append((model, stats))
    (m1, s1), (m2, s2) = runs
    # Assert: the same seed gives the same model; it learned; some pseudo-labels passed the threshold
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert accuracy(m1, test) > 0.9
    assert 0 < s1["mask_rate"] <= 1 and s1["pseudo_label_accuracy"] > 0.8
    assert [h["step"] for h in s1["history"]] == [10, 20, 30, 40]
    assert {"loss", "loss_x", "loss_u", "seconds", "steps"} <= set(s1)


def test_train_supervised_learns_the_toy_task():
    labelled, test = _toy(16, 0), _toy(200, 2)
    model = _model()
    stats = train_supervised(model, labelled, steps=40, batch_size=8, lr=0.1, seed=0, log_every=10)
    assert accuracy(model, test) > 0.9 and stats["history"][-1]["loss"] < stats["history"][0]["loss"]


def test_train_fixmatch_needs_unlabelled_images():
    with pytest.raises(ConfigError):
        train_fixmatch(_model(), _toy(4, 0), torch.zeros(0, 1, 8, 8), steps=1, seed=0)


def test_trainers_refuse_unlabelled_images_in_the_labelled_set():
    data = _toy(4, 0)
    data.y[0] = -1  # an OOD image the labeller could not label
    with pytest.raises(ConfigError):
        train_supervised(_model(), data, steps=1, seed=0)
    with pytest.raises(ConfigError):
        train_fixmatch(_model(), data, torch.zeros(2, 1, 8, 8), steps=1, seed=0)
