"""Local training and evaluation loops shared by every protocol."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cotrain.data.base import ArrayDataset


@dataclass(frozen=True)
class OptimizerSettings:
    """SGD settings of a participant's local training."""

    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0

    def build(self, params) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)


def batch_order(n: int, batch_size: int, steps: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Indices of ``steps`` mini-batches: reshuffled epochs, the last partial batch of an epoch dropped
    unless the data set is smaller than a batch."""
    if n == 0:
        raise ValueError("cannot train on an empty data set")
    bs = min(batch_size, n)
    batches: list[torch.Tensor] = []
    while len(batches) < steps:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n - bs + 1, bs):
            batches.append(perm[start:start + bs])
            if len(batches) == steps:
                break
    return batches


def train_steps(model: nn.Module, data: ArrayDataset, batches: list[torch.Tensor],
                optimizer: torch.optim.Optimizer) -> float:
    """Cross-entropy SGD over the given mini-batches; returns the mean training loss."""
    model.train()
    total = 0.0
    for idx in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(data.x[idx]), data.y[idx])
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
    return total / max(len(batches), 1)


@torch.no_grad()
def evaluate(model: nn.Module, data: ArrayDataset, *, batch_size: int = 1024) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``data``."""
    model.eval()
    correct, loss_sum = 0, 0.0
    for start in range(0, len(data), batch_size):
        x, y = data.x[start:start + batch_size], data.y[start:start + batch_size]
        logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    n = max(len(data), 1)
    return {"accuracy": correct / n, "loss": loss_sum / n}
