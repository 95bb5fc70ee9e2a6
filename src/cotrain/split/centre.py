"""The computing centre's side of split learning: the layers after the cut and their optimiser.

Given activations A of shape (B, *cut_shape) from an agent (and its labels y of shape (B,)), the
centre runs f_c o f_n o .. o f_{k1+1} on A, the cross-entropy loss, its backward pass, an SGD step,
and returns dL/dA of shape (B, *cut_shape) (the 2023 split-training paper). In the U-shaped option
the centre holds only the middle blocks: it returns their output to the agent and later receives
the gradient at that output.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn

Observer = Callable[[str, int, torch.Tensor], None]
"""``observer(agent_id, epoch, activations)``: sees each cut-layer activation tensor the centre receives."""


class CentreSide:
    """One centre-side model (the back, or the U-shaped middle) with its SGD optimiser.

    ``seconds`` accumulates the centre's compute time (for the critical-path estimate).
    """

    def __init__(self, module: nn.Module, *, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 u_shaped: bool = False) -> None:
        self.module = module
        self.u_shaped = u_shaped
        self.optimizer = torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.seconds = 0.0
        self._inputs: torch.Tensor | None = None
        self._outputs: torch.Tensor | None = None

    def step(self, activations: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Back and head on A (B, *cut_shape) with labels y (B,): SGD step; returns (dL/dA, loss)."""
        if self.u_shaped:
            raise RuntimeError("a U-shaped centre has no head and no labels: use forward_middle/backward_middle")
        t0 = time.perf_counter()
        self.module.train()
        inputs = activations.detach().requires_grad_(True)
        self.optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.module(inputs), labels)
        loss.backward()
        self.optimizer.step()
        self.seconds += time.perf_counter() - t0
        return inputs.grad.detach(), float(loss.detach())

    def forward_middle(self, activations: torch.Tensor) -> torch.Tensor:
        """U-shaped: the middle blocks on A (B, *cut_shape); returns (B, *cut2_shape), keeping the graph."""
        t0 = time.perf_counter()
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        self._inputs = activations.detach().requires_grad_(True)
        self._outputs = self.module(self._inputs)
        self.seconds += time.perf_counter() - t0
        return self._outputs.detach()

    def backward_middle(self, gradient: torch.Tensor) -> torch.Tensor:
        """U-shaped: backward from dL/d(output) (B, *cut2_shape); SGD step; returns dL/dA (B, *cut_shape)."""
        if self._outputs is None or self._inputs is None:
            raise RuntimeError("backward_middle without forward_middle")
        t0 = time.perf_counter()
        self._outputs.backward(gradient)
        self.optimizer.step()
        grad = self._inputs.grad.detach()
        self._inputs, self._outputs = None, None
        self.seconds += time.perf_counter() - t0
        return grad
