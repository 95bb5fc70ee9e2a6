"""Model registry: ``register_model("small_cnn")`` and :func:`build_model`."""

from __future__ import annotations

from typing import Any, Callable

import torch

from cotrain.models.blocks import BlockModel
from cotrain.registry import Registry
from cotrain.seeding import seed_torch

ModelFactory = Callable[..., BlockModel]
MODELS: Registry[ModelFactory] = Registry("model")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register ``factory(input_shape, num_classes, **options) -> BlockModel`` under ``name``."""
    return MODELS.register(name)


def available_models() -> list[str]:
    return MODELS.names()


def build_model(name: str, *, input_shape: tuple[int, ...], num_classes: int, seed: int | None = None,
                **options: Any) -> BlockModel:
    """Build a registered model. With ``seed`` the initial weights are a function of it alone."""
    factory = MODELS.get(name)
    if seed is None:
        return factory(tuple(input_shape), int(num_classes), **options)
    with torch.random.fork_rng(devices=[]):
        seed_torch(seed)
        return factory(tuple(input_shape), int(num_classes), **options)
