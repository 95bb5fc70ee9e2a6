"""Models made of blocks: f_1 .. f_{n+1} and a head f_c.

Split learning cuts a model between blocks; the gradient audit reads the last block f_{n+1} and
the head f_c; domain adaptation uses the blocks as feature extractor G and the head as task model T.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class BlockModel(nn.Module):
    """An ordered list of named blocks followed by a head.

    ``forward(x) = head(blocks[n](...blocks[0](x)))``. Block ``i``'s output is the input of block
    ``i + 1``; the last block's output is the feature vector E(X) the head classifies.
    """

    def __init__(self, blocks: Sequence[nn.Module], head: nn.Module, *, block_names: Sequence[str] | None = None) -> None:
        super().__init__()
        if len(blocks) == 0:
            raise ValueError("a BlockModel needs at least one block")
        names = list(block_names) if block_names is not None else [f"block{i + 1}" for i in range(len(blocks))]
        if len(names) != len(blocks) or len(set(names)) != len(names):
            raise ValueError(f"block names must be unique, one per block; got {names}")
        if "head" in names:
            raise ValueError("'head' is reserved for the head")
        self.block_names = names
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def features(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """Output of the first ``upto`` blocks (all blocks when None): E(X) by default."""
        upto = self.num_blocks if upto is None else upto
        for block in self.blocks[:upto]:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def cut_index(self, cut: int | str) -> int:
        """Index k such that the front is blocks[:k]. ``cut`` is an index or the name of the last front block."""
        valid = ", ".join(f"{i + 1} ({n})" for i, n in enumerate(self.block_names))
        if isinstance(cut, str) and not cut.isdigit():
            if cut not in self.block_names:
                raise ValueError(f"no block named {cut!r}; cut after one of: {valid}")
            return self.block_names.index(cut) + 1
        k = int(cut)
        if not 1 <= k <= self.num_blocks:
            raise ValueError(f"cut {k} does not exist: cut after block 1..{self.num_blocks}: {valid}")
        return k

    def cut(self, cut: int | str) -> tuple["Front", "Back"]:
        """Front (blocks[:k]) and back (blocks[k:] + head), sharing this model's modules."""
        k = self.cut_index(cut)
        return Front(self.blocks[:k]), Back(self.blocks[k:], self.head)

    def last_block_and_head(self) -> tuple[nn.Module, nn.Module]:
        """(f_{n+1}, f_c): the part of the model the gradient audit reads."""
        return self.blocks[-1], self.head


class Front(nn.Module):
    """Blocks before the cut: what an agent (split learning) holds."""

    def __init__(self, blocks: nn.ModuleList) -> None:
        super().__init__()
        self.blocks = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class Back(nn.Module):
    """Blocks after the cut and the head: what the computing centre holds."""

    def __init__(self, blocks: nn.ModuleList, head: nn.Module) -> None:
        super().__init__()
        self.blocks = blocks
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def norm_layer(kind: str, channels: int) -> nn.Module:
    """``"none"``, ``"batch"`` or ``"group"`` normalisation (DP-SGD needs ``"group"``)."""
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"unknown norm {kind!r}; use one of 'none', 'batch', 'group'")
