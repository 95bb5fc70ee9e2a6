"""Differential privacy: clipping, noise mechanisms that record what they release, accountants.

>>> import torch
>>> from cotrain.privacy import clip_l2, gaussian_mechanism, epsilon_of
>>> clipped, norm = clip_l2(torch.tensor([3.0, 4.0]), max_norm=1.0)
>>> clipped.tolist(), norm
([0.6000000238418579, 0.800000011920929], 5.0)
>>> spends = []
>>> noised = gaussian_mechanism(clipped, sensitivity=1.0, noise_multiplier=2.0,
...                             generator=torch.Generator().manual_seed(0), party="p0", round=1,
...                             record=spends.append, release="update")
>>> round(epsilon_of(spends, delta=1e-5), 2)
1.99

Every noised release is a :class:`~cotrain.runtime.spend.PrivacySpend`; a participant puts it in
its reply's ``spends`` (the ledger records it with the message), a server rule returns it in
``Aggregate.spends``. (epsilon, delta) always comes from an accountant on dp-accounting, never from
a hand formula. See docs/privacy.md.
"""

from cotrain.privacy.accountant import (ACCOUNTANTS, dp_event, epsilon_by_party, epsilon_of,
                                        register_accountant, spends_event)
from cotrain.privacy.calibration import noise_multiplier_for
from cotrain.privacy.clipping import clip_l2, l2_norm
from cotrain.privacy.mechanisms import gaussian_mechanism, laplace_mechanism
from cotrain.privacy.parameters import PrivacyParameterError
from cotrain.runtime.spend import PrivacySpend

__all__ = [
    "ACCOUNTANTS", "dp_event", "epsilon_by_party", "epsilon_of", "register_accountant", "spends_event",
    "noise_multiplier_for", "clip_l2", "l2_norm", "gaussian_mechanism", "laplace_mechanism",
    "PrivacyParameterError", "PrivacySpend",
]
