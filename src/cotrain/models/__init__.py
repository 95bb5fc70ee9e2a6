"""Models made of blocks."""

from cotrain.models import zoo as _zoo  # noqa: F401  (registers the built-in models)
from cotrain.models.blocks import Back, BlockModel, Front, norm_layer
from cotrain.models.registry import available_models, build_model, register_model

__all__ = ["Back", "BlockModel", "Front", "norm_layer", "available_models", "build_model", "register_model"]
