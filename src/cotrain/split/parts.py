"""Cutting a :class:`~cotrain.models.BlockModel` into the agent side and the centre side.

For blocks f_1 .. f_n and head f_c, a cut after block k1 gives the agent the front
f_{k1} o .. o f_1 (input (B, *input_shape) -> activations (B, *cut_shape)) and the centre the rest
f_c o f_n o .. o f_{k1+1}. The U-shaped option adds a second cut after block k2 > k1: the centre
keeps only the middle f_{k2} o .. o f_{k1+1}, and the tail f_c o f_n o .. o f_{k2+1} returns to
the agent with the labels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cotrain.models.blocks import Back, BlockModel, Front


def split_model(model: BlockModel, cut: int | str, tail_cut: int | str | None = None) -> tuple[nn.ModuleDict, nn.Module]:
    """(agent side, centre side), sharing ``model``'s modules.

    The agent side is a ``ModuleDict`` with ``"front"`` and, when U-shaped, ``"tail"``; its
    ``state_dict`` names (``front.blocks.0...``, ``tail.head.weight``) are what travels in
    PARAMETERS messages, the same on every party that cuts the same architecture the same way.

    Raises:
        ValueError: a cut that does not exist (from :meth:`BlockModel.cut_index`), or a tail cut
            not after the first cut.
    """
    k1 = model.cut_index(cut)
    if tail_cut is None:
        front, back = model.cut(k1)
        return nn.ModuleDict({"front": front}), back
    k2 = model.cut_index(tail_cut)
    if k2 <= k1:
        raise ValueError(f"U-shaped split needs the tail cut after the first cut: got cut {k1} "
                         f"({model.block_names[k1 - 1]}), tail cut {k2} ({model.block_names[k2 - 1]})")
    agent = nn.ModuleDict({"front": Front(model.blocks[:k1]), "tail": Back(model.blocks[k2:], model.head)})
    return agent, Front(model.blocks[k1:k2])


def side_state(side: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copy of a side's state (parameters and buffers): what a PARAMETERS message carries."""
    return {k: v.detach().clone() for k, v in side.state_dict().items()}


def state_bytes(side: nn.Module) -> int:
    """Bytes of :func:`side_state` (element size times count, summed): |W| or beta|W| of the cost model."""
    return sum(v.numel() * v.element_size() for v in side.state_dict().values())


@torch.no_grad()
def cut_shapes(model: BlockModel, input_shape: tuple[int, ...], cut: int | str,
               tail_cut: int | str | None = None) -> list[tuple[int, ...]]:
    """Per-sample shapes of the tensors crossing each cut: [cut_shape] or [cut_shape, cut2_shape]."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *input_shape)
    shapes = []
    for c in [cut] + ([] if tail_cut is None else [tail_cut]):
        shapes.append(tuple(model.features(x, upto=model.cut_index(c)).shape[1:]))
    model.train(was_training)
    return shapes


def cut_values(model: BlockModel, input_shape: tuple[int, ...], cut: int | str,
               tail_cut: int | str | None = None) -> int:
    """q of the cost model: values per sample crossing the cut(s), summed over the cuts."""
    return sum(math.prod(s) for s in cut_shapes(model, input_shape, cut, tail_cut))
