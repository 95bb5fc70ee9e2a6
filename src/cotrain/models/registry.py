"""Model registry: ``register_model("small_cnn")`` and :func:`build_model`."""

from __future__ import annotations

from typing import Any, Callable

import torch

from cotrain.models.blocks import BlockModel

ModelFactory = Callable[..., BlockModel]
_MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register ``factory(input_shape, num_classes, **options) -> BlockModel`` under ``name``."""

    def add(factory: ModelFactory) -> ModelFactory:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = factory
        return factory

    return add


def available_models() -> list[str]:
    return sorted(_MODELS)


def build_model(name: str, *, input_shape: tuple[int, ...], num_classes: int, seed: int | None = None,
                **options: Any) -> BlockModel:
    """Build a registered model. With ``seed`` the initial weights are a function of it alone."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    if seed is None:
        return _MODELS[name](tuple(input_shape), int(num_classes), **options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _MODELS[name](tuple(input_shape), int(num_classes), **options)
