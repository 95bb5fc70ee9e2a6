"""Estimating an upload's batch size ``B`` when its metadata lacks it (server side only).

Evidence comes only from what the server holds: the shared model, the uploaded gradient and its
own auxiliary labelled data (never the participant's data).

1. **Rank of the head's gradient** (exact for small batches). For a linear head and the mean
   cross-entropy, ``[dW | db] = (1/B) R^T [E | 1]`` with ``R = P - Y`` ``(B, K)``; every row of ``R``
   sums to zero, so the rank is at most ``min(B, K - 1, d + 1)`` and generically equal to it. A
   numerical rank ``r`` below ``limit = min(K - 1, d + 1)`` gives ``B = r`` (``B = 1``: rank one,
   iDLG's observation; the rank-one-per-sample structure of fully connected gradients is also what
   e.g. the Cocktail Party Attack, Kariyappa et al. 2023, exploits). A sample the model fits
   perfectly (``r_i = 0``) adds no rank, so ``r`` is a lower bound in general.
2. **Gradient noise scale** (rank saturated). ``g``, the last block's and head's upload, is the
   mean of ``B`` per-sample gradients. For i.i.d. samples with mean ``mu``, covariance ``Sigma``,
   ``E||g - mu||^2 = tr(Sigma) / B`` (the relation behind the noise scale of McCandlish et al.
   2018, "An Empirical Model of Large-Batch Training"), so ``B_hat = tr(Sigma) / ||g - mu||^2``.
   Conditioning on the batch's class proportions ``q`` removes the between-class part (essential
   for non-IID participants)::

       B_hat = sum_k q_k tr(Sigma_k) / (||g - sum_k q_k mu_k||^2 - sum_k q_k^2 tr(Sigma_k) / N_k)

   with ``mu_k``, ``tr(Sigma_k)`` from per-sample gradients of the ``N_k`` auxiliary samples of
   class ``k`` (the last term removes their estimation noise). ``q`` (independent of ``B``) comes
   from ``db = (M - I)^T q`` as in :mod:`cotrain.audit.labels`, solved by generalised least squares
   with the auxiliary class mix ``pi`` as prior: ``db - (M-I)^T q`` has covariance ``S/B``
   (``S`` the within-class covariance of ``r`` on aux data) and, for i.i.d. sampling, ``q - pi``
   about ``diag(pi)/B``; ``B`` cancels. When the model fits the data (``M ~ I``) ``db`` says
   little and ``q -> pi``. ``B_hat`` is clipped to ``[limit, max_batch_size]``.

Accuracy rests on the batch resembling the auxiliary data: a batch of harder samples reads as a
smaller batch. Per-sample gradients are taken in eval mode (no batch-norm coupling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import nnls
from torch.func import functional_call, grad, vmap

from cotrain.audit.labels import head_gradients
from cotrain.audit.threat_model import ObservedUpload, block_parameter_names, head_parameter_names
from cotrain.models.blocks import BlockModel


@dataclass(frozen=True)
class BatchSizeEstimate:
    """``estimate`` (the ``B`` to use) and how: ``method`` ``"rank"`` (exact read) or ``"noise_scale"``.

    Evidence: ``head_rank`` of ``[dW | db]`` and its ``rank_limit``; ``raw``: unclipped noise-scale
    value (``inf`` when ``||g - mean||^2`` does not exceed the noise); ``class_proportions`` ``q``;
    ``excess`` ``||g - mean||^2 - noise``; ``trace_cov`` ``sum_k q_k tr(Sigma_k)``; ``aux_samples``.
    """

    estimate: int
    method: str
    head_rank: int
    rank_limit: int
    raw: float
    class_proportions: tuple[float, ...]
    excess: float
    trace_cov: float
    aux_samples: int


def head_rank(model: BlockModel, upload: ObservedUpload, *, rtol: float = 1e-6) -> tuple[int, int]:
    """``(numerical rank of [dW | db], min(K - 1, d + 1))``; singular values below ``rtol * s_max`` count as 0."""
    dw, db = head_gradients(model, upload)
    m = torch.cat([dw, db[:, None]], 1) if db is not None else dw
    s = torch.linalg.svdvals(m.detach().double())
    return int((s > rtol * float(s[0])).sum()) if float(s[0]) > 0 else 0, min(dw.shape[0] - 1, m.shape[1])


def class_moments(tail: torch.nn.Module, inputs: torch.Tensor, y: torch.Tensor, names: list[str], num_classes: int,
                  *, chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per class: ``(mean per-sample gradient (K, P), tr(Sigma_k) (K,), counts (K,))`` of ``tail``'s ``names``."""
    tail.eval()
    params = dict(tail.named_parameters())
    trainable = {n: params[n].detach() for n in names}
    frozen = {n: p.detach() for n, p in params.items() if n not in trainable}

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(functional_call(tail, {**frozen, **p}, (xi[None],)), yi[None])

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    sums = torch.zeros(num_classes, sum(t.numel() for t in trainable.values()), dtype=torch.float64)
    sq = torch.zeros(num_classes, dtype=torch.float64)
    for s in range(0, len(inputs), chunk):
        g = per_sample(trainable, inputs[s:s + chunk], y[s:s + chunk])
        flat = torch.cat([g[n].reshape(g[n].shape[0], -1) for n in names], 1).double()
        sums.index_add_(0, y[s:s + chunk], flat)
        sq.index_add_(0, y[s:s + chunk], (flat ** 2).sum(1))
    counts = torch.bincount(y, minlength=num_classes).double()
    mu = sums / counts.clamp_min(1)[:, None]
    trace = ((sq / counts.clamp_min(1) - (mu ** 2).sum(1)) * counts / (counts - 1).clamp_min(1)).clamp_min(0)
    return mu, trace, counts


def class_proportions(db: np.ndarray, probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``q``: GLS solve of ``db = (M - I)^T q`` with prior ``pi`` (module docstring); ``probs`` aux softmax."""
    k = len(db)
    onehot = np.eye(k)[y]
    pi = np.maximum(onehot.mean(0), 1.0 / len(y))
    m = np.stack([probs[y == j].mean(0) if (y == j).any() else probs.mean(0) for j in range(k)])
    r = probs - onehot
    s = sum((pi[j] * np.cov(r[y == j].T) for j in range(k) if (y == j).sum() > 1), np.zeros((k, k)))
    s = s + 1e-6 * max(float(np.trace(s)) / k, 1e-30) * np.eye(k)
    w = np.linalg.cholesky(np.linalg.inv(s)).T  # w^T w = S^-1
    a = np.vstack([w @ (m - np.eye(k)).T, np.diag(pi ** -0.5)])
    rho = 10.0 * float(np.abs(a).max())
    q, _ = nnls(np.vstack([a, rho * np.ones((1, k))]), np.concatenate([w @ db, pi ** 0.5, [rho]]))
    return q / q.sum()


def estimate_batch_size(model: BlockModel, upload: ObservedUpload, aux_x: torch.Tensor, aux_y: torch.Tensor, *,
                        max_batch_size: int = 1024, rtol: float = 1e-6) -> BatchSizeEstimate:
    """Estimate ``B`` of ``upload`` from its gradient and the server's auxiliary data ``(aux_x, aux_y)``.

    ``model`` gives the architecture (the upload's state is loaded into a private copy); the head
    must be linear with a bias (label proportions are read from ``dL/db``).
    """
    if len(aux_x) < 2 or len(aux_x) != len(aux_y):
        raise ValueError("estimating the batch size needs at least 2 labelled auxiliary samples; "
                         f"got {len(aux_x)} inputs and {len(aux_y)} labels")
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    shared = upload.shared_model(model)
    rank, limit = head_rank(shared, upload, rtol=rtol)
    dw, db = head_gradients(shared, upload)
    if db is None:
        raise ValueError("batch-size estimation reads the head's bias gradient; this head has no bias")
    y = aux_y.to(torch.long)
    names = block_parameter_names(shared, -1) + head_parameter_names(shared)
    shared.eval()
    with torch.no_grad():  # per-sample gradients of the last block and head only: start from its input
        inputs = shared.features(aux_x, shared.num_blocks - 1)
        probs = torch.softmax(shared.head(shared.blocks[-1](inputs)), 1).double().numpy()
    tail = torch.nn.Sequential(shared.blocks[-1], shared.head)  # "blocks.<n>.w" -> "0.w", "head.w" -> "1.w"
    tail_names = ["1." + n[5:] if n.startswith("head.") else "0." + n.split(".", 2)[2] for n in names]
    mu, trace, counts = class_moments(tail, inputs, y, tail_names, dw.shape[0])
    q = torch.from_numpy(class_proportions(db.detach().double().numpy(), probs, y.numpy()))
    seen = counts > 1  # classes the server has no data on take the overall moments
    overall = (mu * counts[:, None]).sum(0) / counts.sum()
    mu[~seen] = overall
    trace[~seen] = (trace * counts).sum() / counts.sum()
    g = torch.cat([upload.gradients[n].detach().reshape(-1) for n in names]).double()
    tr_w = float(q @ trace)
    excess = float(((g - q @ mu) ** 2).sum()) - float((q ** 2 * trace / counts.where(seen, counts.sum())).sum())
    raw = tr_w / excess if excess > 0 else float("inf")
    n = len(aux_x)
    if rank < limit:
        return BatchSizeEstimate(max(rank, 1), "rank", rank, limit, raw, tuple(q.tolist()), excess, tr_w, n)
    est = max_batch_size if raw == float("inf") else int(round(min(max(raw, min(limit, max_batch_size)),
                                                                    max_batch_size)))
    return BatchSizeEstimate(est, "noise_scale", rank, limit, raw, tuple(q.tolist()), excess, tr_w, n)
