"""The attacks' maps against ByzFL 0.0.11's on the same benign vectors (skipped where ByzFL does
not import: its package imports torchvision through ``byzfl.benchmark`` and ``byzfl.fed_framework``,
which are stubbed, since the attacks module needs neither)."""

import sys
import types

import numpy as np
import pytest
import torch

from cotrain.behaviours.attacks.alie import alie_update
from cotrain.behaviours.attacks.ipm import ipm_update


@pytest.fixture(scope="module")
def byzfl_attacks():
    stubbed = {}
    for name in ("byzfl.benchmark", "byzfl.fed_framework"):
        if name not in sys.modules:
            stubbed[name] = sys.modules[name] = types.ModuleType(name)
    try:
        from byzfl.attacks import attacks
    except Exception as exc:  # noqa: BLE001  (any import failure means: no reference here)
        pytest.skip(f"byzfl does not import: {exc}")
    finally:
        for name in stubbed:
            sys.modules.pop(name, None)
    return attacks


def _benign(seed=0):
    return torch.randn(6, 40, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("z", [0.6744897501960817, 1.5])
def test_alie_matches_byzfl_with_tau_minus_z(byzfl_attacks, z):
    benign = _benign()
    ours = alie_update(benign, z).numpy()
    theirs = byzfl_attacks.ALittleIsEnough(tau=-z)(benign.numpy())
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("epsilon", [0.1, 100.0])
def test_ipm_matches_byzfl(byzfl_attacks, epsilon):
    benign = _benign(1)
    np.testing.assert_allclose(ipm_update(benign, epsilon).numpy(),
                               byzfl_attacks.InnerProductManipulation(tau=epsilon)(benign.numpy()),
                               rtol=1e-12, atol=1e-12)


def test_sign_flip_of_one_update_matches_byzfl_on_that_update(byzfl_attacks):
    u = _benign(2)[:1]
    np.testing.assert_allclose(-u[0].numpy(), byzfl_attacks.SignFlipping()(u.numpy()), rtol=0, atol=0)
