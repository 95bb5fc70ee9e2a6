"""The LeNet-style digit model ADDA adapts, registered as the block model ``"adda_lenet"``.

ADDA (Tzeng et al., CVPR 2017, sec. 5.1): for MNIST/USPS "a simple modified LeNet" as the
encoder. As blocks of a :class:`~cotrain.models.BlockModel` (G = blocks, T = head)::

    conv1: Conv(C, 20, 5) -> MaxPool 2 -> ReLU                      (B, 20, 12, 12) for 28x28
    conv2: Conv(20, 50, 5) -> Dropout2d -> MaxPool 2 -> ReLU         (B, 50, 4, 4)
    fc:    Flatten -> Linear(50*4*4, 500) -> ReLU                    (B, 500) = G(x)
    head:  Linear(500, classes)                                      (B, K)   = T(G(x))
"""

from __future__ import annotations

from torch import nn

from cotrain.models.blocks import BlockModel
from cotrain.models.registry import available_models, register_model

NAME = "adda_lenet"


def adda_lenet(input_shape: tuple[int, ...], num_classes: int, *, features: int = 500,
               dropout: float = 0.5) -> BlockModel:
    """LeNet encoder G with ``features`` outputs and a linear task head T, for (C, H, W) inputs (H, W >= 16)."""
    if len(input_shape) != 3:
        raise ValueError(f"{NAME} expects (channels, height, width) inputs, got shape {input_shape}")
    c, h, w = input_shape
    if min(h, w) < 16:
        raise ValueError(f"{NAME} needs inputs of at least 16x16, got {h}x{w}")
    h2, w2 = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
    blocks = [
        nn.Sequential(nn.Conv2d(c, 20, 5), nn.MaxPool2d(2), nn.ReLU()),
        nn.Sequential(nn.Conv2d(20, 50, 5), nn.Dropout2d(dropout), nn.MaxPool2d(2), nn.ReLU()),
        nn.Sequential(nn.Flatten(), nn.Linear(50 * h2 * w2, features), nn.ReLU()),
    ]
    return BlockModel(blocks, nn.Linear(features, num_classes), block_names=["conv1", "conv2", "fc"])


if NAME not in available_models():
    register_model(NAME)(adda_lenet)
