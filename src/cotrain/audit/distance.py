"""The gradient distance of patent CN114287009A: cosine plus Gaussian-kernel terms.

For an observed gradient ``g`` and a candidate ``g_hat`` (each the concatenation, flattened, of
the gradients of one block's parameters; ``n = numel``)::

    cos   = <g, g_hat> / (||g|| ||g_hat||)
    k     = exp(-(||g - g_hat||^2 / n) / (2 sigma^2)),   sigma^2 = Var(g) = (1/n) sum_j (g_j - mean g)^2
    d     = w_cos (1 - cos) + w_kernel (1 - k)

Normalisation: the squared distance is divided by ``n`` (a mean squared error) and ``sigma^2`` is
the population variance of the observed gradient's entries, so ``k`` is scale free: a candidate
whose per-entry error equals the spread of ``g`` scores ``exp(-1/2)``. Both terms lie in [0, 2]
and [0, 1]; ``d = 0`` iff ``g_hat = g`` (for ``g`` not constant).
"""

from __future__ import annotations

from typing import Sequence

import torch

_EPS = 1e-12


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one vector (shape ``(sum numel,)``)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def cosine_term(g: torch.Tensor, g_hat: torch.Tensor) -> torch.Tensor:
    """``1 - cos(g, g_hat)`` for flat vectors."""
    return 1.0 - (g * g_hat).sum() / (g.norm() * g_hat.norm() + _EPS)


def kernel_term(g: torch.Tensor, g_hat: torch.Tensor) -> torch.Tensor:
    """``1 - exp(-mean((g - g_hat)^2) / (2 Var(g)))`` for flat vectors (``Var`` without Bessel)."""
    var = g.var(unbiased=False).detach() + _EPS
    return 1.0 - torch.exp(-((g - g_hat) ** 2).mean() / (2.0 * var))


def gradient_distance(g: torch.Tensor | Sequence[torch.Tensor], g_hat: torch.Tensor | Sequence[torch.Tensor], *,
                      cosine_weight: float = 1.0, kernel_weight: float = 1.0) -> torch.Tensor:
    """``d(g, g_hat)`` as in the module docstring; tensors or lists of tensors (flattened together)."""
    gv = g if isinstance(g, torch.Tensor) else flatten(g)
    hv = g_hat if isinstance(g_hat, torch.Tensor) else flatten(g_hat)
    gv, hv = gv.reshape(-1), hv.reshape(-1)
    if gv.shape != hv.shape:
        raise ValueError(f"gradient shapes differ: {tuple(gv.shape)} vs {tuple(hv.shape)}")
    out = gv.new_zeros(())
    if cosine_weight:
        out = out + cosine_weight * cosine_term(gv, hv)
    if kernel_weight:
        out = out + kernel_weight * kernel_term(gv, hv)
    return out
