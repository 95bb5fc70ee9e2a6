"""Solving the head's gradient for the batch's features E(X) (an improvement on CN114287009A).

For a linear head ``z_i = W e_i + b`` (``W``: ``(K, d)``), labels ``y_i`` and
``R = softmax(Z) - Y`` (``(B, K)``, row ``i`` = ``r_i = p_i - y_i``), the observed head gradient is::

    dW = (1/B) R^T E        (K, d)        db = (1/B) R^T 1        (K,)

With ``R`` fixed, ``E`` solves a linear least-squares problem; ``R`` depends on ``E`` through the
softmax. We alternate (a damped fixed point)::

    R_t     = softmax(E_t W^T + b) - Y
    E_new   = argmin_E ||R_t^T E / B - dW||^2 + mu ||E - E_0||^2
            = (R_t R_t^T / B^2 + mu I)^{-1} (R_t dW / B + mu E_0)            (B x B solve)
    E_{t+1} = max(0, (1 - eta) E_t + eta E_new)

(``mu`` is relative to the mean diagonal of ``R R^T / B^2``; ``E_0`` the prior), keep the iterate
of lowest relative residual ``rho(E) = ||R^T E/B - dW||^2/||dW||^2 + ||R^T 1/B - db||^2/||db||^2``,
then polish it with Adam on the gradient distance of :mod:`cotrain.audit.distance`.

Identifiability: ``K d`` equations for ``B d`` unknowns, so ``E`` is determined (given labels) when
``B <= K`` and ``R`` has full rank. A sample the model already fits (``r_i ~ 0``) leaves almost no
trace in *any* gradient (every parameter's gradient is linear in ``r_i``), so at late checkpoints
its row is ill-conditioned and the prior dominates; for ``B > K`` the solve is prior-regularised.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from cotrain.audit.distance import gradient_distance


def head_residual(weight: torch.Tensor, bias: torch.Tensor | None, dw: torch.Tensor, db: torch.Tensor | None,
                  labels_onehot: torch.Tensor, e: torch.Tensor) -> float:
    """``rho(E)``: relative squared residual of the head's gradient equations."""
    b = e.shape[0]
    z = e @ weight.T + (bias if bias is not None else 0.0)
    r = torch.softmax(z, 1) - labels_onehot
    out = float(((r.T @ e / b - dw) ** 2).sum() / (dw ** 2).sum().clamp_min(1e-30))
    if db is not None:
        out += float(((r.mean(0) - db) ** 2).sum() / (db ** 2).sum().clamp_min(1e-30))
    return out


def solve_embeddings(weight: torch.Tensor, bias: torch.Tensor | None, dw: torch.Tensor, db: torch.Tensor | None,
                     labels: torch.Tensor, init: torch.Tensor, *, iterations: int = 100, damping: float = 0.5,
                     ridge: float = 1e-6, polish_steps: int = 300, lr: float = 0.03, nonnegative: bool = True,
                     time_limit: float | None = None) -> tuple[torch.Tensor, float]:
    """``(E_hat (B, d), residual)`` from the head's gradient, starting at ``init`` ``(B, d)``."""
    t0 = time.perf_counter()
    w, bb = weight.detach().double(), None if bias is None else bias.detach().double()
    gw, gb = dw.detach().double(), None if db is None else db.detach().double()
    e0 = init.detach().double().reshape(init.shape[0], -1)
    b, k = e0.shape[0], w.shape[0]
    y = torch.nn.functional.one_hot(labels.to(torch.long), k).double()
    best_res, best = head_residual(w, bb, gw, gb, y, e0), e0.clone()
    e = e0.clone()
    for _ in range(iterations):
        r = torch.softmax(e @ w.T + (bb if bb is not None else 0.0), 1) - y
        a = r @ r.T / b ** 2
        scale = float(a.diagonal().mean()) or 1.0
        try:
            e_new = torch.linalg.solve(a + ridge * scale * torch.eye(b, dtype=a.dtype), r @ gw / b + ridge * scale * e0)
        except RuntimeError:
            break
        e = (1 - damping) * e + damping * e_new
        if nonnegative:
            e = e.clamp(min=0)
        res = head_residual(w, bb, gw, gb, y, e)
        if res < best_res:
            best_res, best = res, e.clone()
        if time_limit is not None and time.perf_counter() - t0 > time_limit / 2:
            break
    x = best.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr * float(e0.std().clamp_min(1e-12)))
    target = [gw] + ([gb] if gb is not None else [])
    for _ in range(polish_steps):
        r = torch.softmax(x @ w.T + (bb if bb is not None else 0.0), 1) - y
        loss = gradient_distance(target, [r.T @ x / b] + ([r.mean(0)] if gb is not None else []))
        (x.grad,) = torch.autograd.grad(loss, [x])
        opt.step()
        if nonnegative:
            with torch.no_grad():
                x.clamp_(min=0)
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break
    res = head_residual(w, bb, gw, gb, y, x.detach())
    if res < best_res:
        best_res, best = res, x.detach().clone()
    return best.to(init.dtype).reshape(init.shape), best_res


def refine_labels(weight: torch.Tensor, bias: torch.Tensor | None, dw: torch.Tensor, db: torch.Tensor | None,
                  labels: torch.Tensor, init_for: Callable[[torch.Tensor], torch.Tensor], *, passes: int = 3,
                  screen_iterations: int = 30, min_gain: float = 0.5, nonnegative: bool = True) -> torch.Tensor:
    """Correct the recovered label multiset ``(B,)`` by the head residual (``1 < B <= K``).

    Label-count recovery reads ``n_k`` from ``db`` through the auxiliary estimate of ``E[p | y]``,
    which is off when the batch's softmax outputs differ from the auxiliary average; one wrong label
    makes the head's equations inconsistent, and :func:`solve_embeddings` then misses ``E`` altogether.
    With the right multiset the equations are consistent and the residual ``rho`` falls by orders of
    magnitude, so we search greedily: every move "one sample of class ``a`` becomes class ``c``"
    (at most ``distinct(labels) * (K - 1)`` candidates) is screened with a short fixed-point solve
    (``screen_iterations``, no polish); the best move is taken if it at least halves ``rho``
    (``min_gain``); up to ``passes`` moves. ``init_for(labels)`` gives the prior ``E_0`` ``(B, d)``
    for a multiset. Returns the sorted labels (the input's when no move helps).
    """
    k = weight.shape[0]

    def screen(lab: torch.Tensor) -> float:
        return solve_embeddings(weight, bias, dw, db, lab, init_for(lab), iterations=screen_iterations,
                                polish_steps=0, nonnegative=nonnegative)[1]

    current = labels.sort().values
    best_res = screen(current)
    for _ in range(passes):
        move, move_res = None, best_res * min_gain
        for a in current.unique().tolist():
            for c in range(k):
                if c == a:
                    continue
                cand = current.clone()
                cand[int((cand == a).nonzero()[0, 0])] = c
                cand = cand.sort().values
                res = screen(cand)
                if res < move_res:
                    move, move_res = cand, res
        if move is None:
            break
        current, best_res = move, move_res
    return current
