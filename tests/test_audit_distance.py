import math

import numpy as np
import torch

from cotrain.audit.distance import cosine_term, gradient_distance, kernel_term
from cotrain.audit.scoring import attribute_accuracy, match, proportion_error


def test_distance_hand_worked():
    # g = [1, 0, -1]: mean 0, Var = 2/3; g_hat = [1, 1, -1]
    g = torch.tensor([1.0, 0.0, -1.0])
    h = torch.tensor([1.0, 1.0, -1.0])
    cos = 2.0 / (math.sqrt(2.0) * math.sqrt(3.0))
    kernel = math.exp(-(1.0 / 3.0) / (2.0 * (2.0 / 3.0)))  # exp(-1/4)
    assert math.isclose(float(cosine_term(g, h)), 1 - cos, rel_tol=1e-6)
    assert math.isclose(float(kernel_term(g, h)), 1 - kernel, rel_tol=1e-6)
    assert math.isclose(float(gradient_distance(g, h)), (1 - cos) + (1 - kernel), rel_tol=1e-6)
    assert math.isclose(float(gradient_distance(g, h, kernel_weight=0.0)), 1 - cos, rel_tol=1e-6)


def test_distance_zero_at_equality_and_lists_flatten():
    g = [torch.randn(3, 4), torch.randn(5)]
    assert float(gradient_distance(g, [t.clone() for t in g])) < 1e-6
    assert float(gradient_distance(g, [-t for t in g])) > 2.0


def test_hungarian_matching_recovers_permutation():
    true = torch.randn(6, 10)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    m = match(true[perm] + 0.01 * torch.randn(6, 10), true)
    assert m.order.tolist() == perm.tolist()
    assert m.success_rate == 1.0
    attrs = torch.tensor([0, 1, 0, 1, 1, 0])
    assert attribute_accuracy(attrs[perm].numpy(), attrs, m) == 1.0
    assert math.isclose(proportion_error(np.array([0.5, 0.5]), attrs, 2), 0.0)
    assert math.isclose(proportion_error(np.array([1.0, 0.0]), attrs, 2), 0.5)
