"""The objective of the feature reconstruction, with every constant of an upload computed once.

For one upload the objective of :mod:`cotrain.audit.feature_reconstruction` is::

    J(X_hat) = d(g_{n+1}, g_hat_{n+1}) + lambda d(g_c, g_hat_c) [+ a d(E_anchor, E(X_hat))]
               [+ mu ||X_hat - X_0||^2 / ||X_0||^2]

with ``d`` of :mod:`cotrain.audit.distance` (patent CN114287009A). In ``d(g, g_hat)`` the
observed side ``g`` is fixed for the whole optimisation: its concatenation, its norm ``||g||``
and its variance ``Var(g)`` are computed here once (:class:`ObservedGradient`) instead of once
per Adam step, and so is ``||X_0||^2`` of the prior term (:class:`PriorTerm`, once per restart).
The operations and their order are those of :func:`cotrain.audit.distance.gradient_distance` and
of :func:`prior_term`, so the value and its gradient are the same to the last bit
(``tests/test_audit_convergence.py``); only the repeated work on constants is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from cotrain.audit.distance import _EPS, flatten, gradient_distance

_PRIOR_EPS = 1e-12


class ObservedGradient:
    """An observed gradient ``g`` with the parts of ``d(g, g_hat)`` that depend on ``g`` alone.

    ``distance(g_hat) = (1 - <g, g_hat> / (||g|| ||g_hat|| + eps)) + (1 - exp(-mean((g - g_hat)^2) / (2 (Var(g) + eps))))``,
    exactly :func:`cotrain.audit.distance.gradient_distance` with unit weights.
    """

    def __init__(self, g: torch.Tensor | Sequence[torch.Tensor]) -> None:
        flat = g if isinstance(g, torch.Tensor) else flatten(g)
        self.flat = flat.detach().reshape(-1)
        self.norm = self.flat.norm()
        self.var = self.flat.var(unbiased=False) + _EPS

    def distance(self, g_hat: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """``d(g, g_hat)`` (cosine term plus Gaussian-kernel term)."""
        h = (g_hat if isinstance(g_hat, torch.Tensor) else flatten(g_hat)).reshape(-1)
        if h.shape != self.flat.shape:
            raise ValueError(f"gradient shapes differ: {tuple(self.flat.shape)} vs {tuple(h.shape)}")
        cosine = 1.0 - (self.flat * h).sum() / (self.norm * h.norm() + _EPS)
        kernel = 1.0 - torch.exp(-((self.flat - h) ** 2).mean() / (2.0 * self.var))
        return cosine + kernel


def prior_term(x_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """``||X_hat - X_0||^2 / ||X_0||^2`` over the whole batch (scale free; 1 when ``X_hat = 0``)."""
    return ((x_hat - x0) ** 2).sum() / ((x0 ** 2).sum() + _PRIOR_EPS)


class PriorTerm:
    """:func:`prior_term` with its denominator ``||X_0||^2`` computed once for a start ``X_0``."""

    def __init__(self, x0: torch.Tensor) -> None:
        self.x0 = x0.detach()
        self.denominator = (self.x0 ** 2).sum() + _PRIOR_EPS

    def __call__(self, x_hat: torch.Tensor) -> torch.Tensor:
        return ((x_hat - self.x0) ** 2).sum() / self.denominator


@dataclass
class ReconstructionProblem:
    """What one upload fixes for the optimisation: the shared tail, the observed gradients, labels, anchor.

    ``head_weight`` is lambda, ``anchor_weight`` a, ``prior_weight`` mu of the module docstring.
    """

    last: nn.Module
    head: nn.Module
    block_params: list[torch.Tensor]
    head_params: list[torch.Tensor]
    g_block: list[torch.Tensor]
    g_head: list[torch.Tensor]
    labels: torch.Tensor
    shape: tuple[int, ...]
    num_classes: int
    anchor: torch.Tensor | None
    nonnegative: bool
    soft: bool
    prior_weight: float
    head_weight: float = 0.1
    anchor_weight: float = 1.0

    def __post_init__(self) -> None:
        b = self.labels.numel()
        self.observed_block = ObservedGradient(self.g_block)
        self.observed_head = ObservedGradient(self.g_head)
        self.observed_anchor = None if self.anchor is None else ObservedGradient(self.anchor.reshape(b, -1))

    @property
    def batch_size(self) -> int:
        return self.labels.numel()

    def _model_gradients(self, x_hat: torch.Tensor, y_hat: torch.Tensor | None) -> tuple[torch.Tensor, tuple]:
        """``E(X_hat)`` and ``g_hat`` (block parameters, then head parameters), differentiable in ``X_hat``."""
        e = self.last(x_hat).reshape(self.batch_size, -1)
        logits = self.head(e)
        if y_hat is not None:
            ce = -(torch.softmax(y_hat, 1) * torch.log_softmax(logits, 1)).sum(1).mean()
        else:
            ce = nn.functional.cross_entropy(logits, self.labels)
        return e, torch.autograd.grad(ce, self.block_params + self.head_params, create_graph=True)

    def objective(self, x_hat: torch.Tensor, y_hat: torch.Tensor | None, prior: PriorTerm | None) -> torch.Tensor:
        """``J(X_hat)`` of the module docstring (``y_hat``: soft pseudo-label logits, or ``None`` for fixed labels)."""
        e, grads = self._model_gradients(x_hat, y_hat)
        obj = self.observed_block.distance(grads[:len(self.block_params)]) + \
            self.head_weight * self.observed_head.distance(grads[len(self.block_params):])
        if self.observed_anchor is not None:
            obj = obj + self.anchor_weight * self.observed_anchor.distance(e)
        if self.prior_weight:
            if prior is None:
                raise ValueError("prior_weight > 0 needs the start X_0 (a PriorTerm)")
            obj = obj + self.prior_weight * prior(x_hat)
        return obj

    def reference_objective(self, x_hat: torch.Tensor, y_hat: torch.Tensor | None, x0: torch.Tensor) -> torch.Tensor:
        """The same ``J`` written as before this module: :func:`~cotrain.audit.distance.gradient_distance` and
        :func:`prior_term` recompute the constants at every call (for tests and the step-cost benchmark)."""
        e, grads = self._model_gradients(x_hat, y_hat)
        obj = gradient_distance(self.g_block, grads[:len(self.block_params)]) + \
            self.head_weight * gradient_distance(self.g_head, grads[len(self.block_params):])
        if self.anchor is not None:
            obj = obj + self.anchor_weight * gradient_distance(self.anchor.reshape(self.batch_size, -1), e)
        if self.prior_weight:
            obj = obj + self.prior_weight * prior_term(x_hat, x0)
        return obj
