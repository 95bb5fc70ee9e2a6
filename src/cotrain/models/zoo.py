"""The block models users train here: small CNN, ResNet-style, spectrogram CNN, MLP."""

from __future__ import annotations

import math

import torch
from torch import nn

from cotrain.models.blocks import BlockModel, norm_layer
from cotrain.models.registry import register_model


def _conv_block(c_in: int, c_out: int, norm: str, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1), norm_layer(norm, c_out), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def positive_int(value: object, name: str) -> int:
    """``value`` if it is an integer >= 1, else a one-line ``ValueError`` naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1 (got {value!r})")
    return value


def _image_shape(input_shape: tuple[int, ...], model: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"{model} expects (channels, height, width) inputs, got shape {input_shape}")
    return input_shape  # type: ignore[return-value]


@register_model("small_cnn")
def small_cnn(input_shape: tuple[int, ...], num_classes: int, *, width: int = 32, norm: str = "none",
              pool: str = "flatten") -> BlockModel:
    """Three conv blocks and a linear head, for 28x28 / 32x32 inputs.

    conv1: C->w, pool -> conv2: w->2w, pool -> conv3 (the last conv block f_{n+1}): 2w->2w, then
    ``pool="flatten"`` (default): max-pool and flatten, E(X) of size 2w*(H//8)*(W//8) (576 for 28x28);
    ``pool="gap"``: global average pool, E(X) of size 2w. -> head: Linear(E(X), classes).
    The flattened map learns several times faster (measured on MNIST: 0.95 vs 0.73 test accuracy
    after 300 SGD steps), so it is the default.
    """
    positive_int(width, "width")
    c, h, w_in = _image_shape(input_shape, "small_cnn")
    if pool == "flatten":
        tail: list[nn.Module] = [nn.MaxPool2d(2), nn.Flatten()]
        feature_size = 2 * width * (h // 8) * (w_in // 8)
    elif pool == "gap":
        tail = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        feature_size = 2 * width
    else:
        raise ValueError(f"unknown pool {pool!r}; use 'flatten' or 'gap'")
    if pool == "flatten" and min(h, w_in) < 8:
        raise ValueError(f"small_cnn with pool='flatten' needs inputs of at least 8x8, got {h}x{w_in}")
    last = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 3, padding=1), norm_layer(norm, 2 * width), nn.ReLU(), *tail)
    blocks = [_conv_block(c, width, norm, True), _conv_block(width, 2 * width, norm, True), last]
    return BlockModel(blocks, nn.Linear(feature_size, num_classes), block_names=["conv1", "conv2", "conv3"])


@register_model("audio_cnn")
def audio_cnn(input_shape: tuple[int, ...], num_classes: int, *, width: int = 16, norm: str = "none") -> BlockModel:
    """A small CNN for log-mel spectrograms (1, mels, frames) of any size."""
    positive_int(width, "width")
    c, _, _ = _image_shape(input_shape, "audio_cnn")
    last = nn.Sequential(nn.Conv2d(2 * width, 4 * width, 3, padding=1), norm_layer(norm, 4 * width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())
    blocks = [_conv_block(c, width, norm, True), _conv_block(width, 2 * width, norm, True), last]
    return BlockModel(blocks, nn.Linear(4 * width, num_classes), block_names=["conv1", "conv2", "conv3"])


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and a shortcut (He et al., 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=norm == "none")
        self.n1 = norm_layer(norm, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=norm == "none")
        self.n2 = norm_layer(norm, c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), norm_layer(norm, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.n1(self.conv1(x)))
        return torch.relu(self.n2(self.conv2(out)) + self.shortcut(x))


@register_model("resnet")
def resnet(input_shape: tuple[int, ...], num_classes: int, *, width: int = 16, norm: str = "group",
           blocks_per_stage: int = 1) -> BlockModel:
    """ResNet-style model for 32x32 and 64x64 colour images.

    stem (conv) -> stage1 (w) -> stage2 (2w, /2) -> stage3 (4w, /2) -> stage4, the wide last block
    f_{n+1} (8w, /2, then global average pool) -> head Linear(8w, classes). 64x64 inputs get one
    more downsampling in the stem.
    """
    positive_int(width, "width")
    c, h, _ = _image_shape(input_shape, "resnet")
    stem_stride = 2 if h >= 64 else 1
    stem = nn.Sequential(nn.Conv2d(c, width, 3, stride=stem_stride, padding=1, bias=norm == "none"),
                         norm_layer(norm, width), nn.ReLU())

    def stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(c_in, c_out, stride, norm)]
        layers += [BasicBlock(c_out, c_out, 1, norm) for _ in range(blocks_per_stage - 1)]
        return nn.Sequential(*layers)

    w = width
    last = nn.Sequential(stage(4 * w, 8 * w, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    blocks = [stem, stage(w, w, 1), stage(w, 2 * w, 2), stage(2 * w, 4 * w, 2), last]
    return BlockModel(blocks, nn.Linear(8 * w, num_classes),
                      block_names=["stem", "stage1", "stage2", "stage3", "stage4"])


@register_model("mlp")
def mlp(input_shape: tuple[int, ...], num_classes: int, *, hidden: tuple[int, ...] | list[int] = (256, 128)) -> BlockModel:
    """Fully connected blocks (Linear + ReLU); the first block flattens its input."""
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, (list, tuple)) or len(hidden) == 0:
        raise ValueError(f"hidden must be a non-empty list of layer widths (got {hidden!r})")
    for h in hidden:
        positive_int(h, "hidden")
    d_in = int(math.prod(input_shape))
    blocks: list[nn.Module] = []
    for i, h in enumerate(hidden):
        layers: list[nn.Module] = [nn.Flatten()] if i == 0 else []
        blocks.append(nn.Sequential(*layers, nn.Linear(d_in, h), nn.ReLU()))
        d_in = h
    return BlockModel(blocks, nn.Linear(d_in, num_classes), block_names=[f"fc{i + 1}" for i in range(len(hidden))])
