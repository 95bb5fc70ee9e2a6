"""The domain discriminator D on the feature extractor's output, and the feature size it needs.

ADDA (Tzeng et al., CVPR 2017, sec. 5.1) uses for digits a discriminator of three fully connected
layers, two hidden layers of 500 units with ReLU and one output; the federated transfer learning
patent ("Model training method and computing node based on federated transfer learning") uses the
same kind of D, trained at every node and aggregated.

    D: R^F -> R,   f (B, F)  ->  logit (B,)   with  sigmoid(logit) = p(source | f)
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from cotrain.models.blocks import BlockModel
from cotrain.seeding import seed_torch


class DomainDiscriminator(nn.Module):
    """MLP ``F -> hidden[0] -> ... -> 1`` with ReLU between layers; returns logits of shape (B,)."""

    def __init__(self, feature_dim: int, hidden: Sequence[int] = (500, 500)) -> None:
        super().__init__()
        if feature_dim < 1:
            raise ValueError(f"feature_dim must be positive, got {feature_dim}")
        layers: list[nn.Module] = []
        d_in = int(feature_dim)
        for h in hidden:
            layers += [nn.Linear(d_in, int(h)), nn.ReLU()]
            d_in = int(h)
        layers.append(nn.Linear(d_in, 1))
        self.net = nn.Sequential(*layers)
        self.feature_dim = int(feature_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(f"expected features of shape (B, {self.feature_dim}), got {tuple(features.shape)}")
        return self.net(features).squeeze(1)


def feature_dim(model: BlockModel, input_shape: Sequence[int]) -> int:
    """Size F of G's output ``model.features(x)`` for one input of ``input_shape`` (C, H, W) or (D,)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        f = model.features(torch.zeros(1, *input_shape))
    model.train(was_training)
    if f.ndim != 2:
        raise ValueError(f"G must output flat features (B, F) for a discriminator, got {tuple(f.shape)}")
    return int(f.shape[1])


def build_discriminator(feature_size: int, *, hidden: Sequence[int] = (500, 500),
                        seed: int | None = None) -> DomainDiscriminator:
    """A :class:`DomainDiscriminator` whose initial weights are a function of ``seed`` alone."""
    if seed is None:
        return DomainDiscriminator(feature_size, hidden)
    with torch.random.fork_rng(devices=[]):
        seed_torch(seed)
        return DomainDiscriminator(feature_size, hidden)
