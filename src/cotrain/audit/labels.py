"""Label recovery and the exact batch-1 feature read from the head's gradient.

For the head ``f_c(e) = W e + b`` (``W``: ``(K, d)``) and the mean cross-entropy over a batch of
``B`` samples with features ``e_i`` (``(d,)``), softmax outputs ``p_i`` and one-hot labels ``y_i``::

    dL/dW = (1/B) sum_i (p_i - y_i) e_i^T          (K, d)
    dL/db = (1/B) sum_i (p_i - y_i)                 (K,)

* **Batch 1** (iDLG, Zhao et al. 2020): ``dL/db = p - y`` has exactly one negative entry, the
  label; and every row ``k`` of ``dL/dW`` equals ``(p_k - y_k) e^T``, so ``e = dW[k] / db[k]``
  exactly (we take the row with the largest ``|db[k]|``).
* **Batch B** (label counts, in the spirit of Wainakh et al. 2022 "LLG" and Geng et al. 2021):
  ``dL/db_k = pbar_k - n_k/B`` with ``pbar = (1/B) sum_i p_i``. Writing ``q = n/B`` and
  ``M[j, k] = E[p_k | y = j]`` (estimated by the server on its auxiliary data with the shared
  model), ``pbar = M^T q`` and so ``dL/db = (M - I)^T q``. We solve for ``q`` with ``q >= 0``,
  ``sum q = 1`` (non-negative least squares with the sum as a heavily weighted extra row), force
  a count of at least one on every class with ``dL/db_k < 0`` (such classes must be present),
  and round ``B q`` to integers summing to ``B`` by largest remainders.
  Without ``M`` the model's outputs are taken as uniform, ``M = (1/K) 1 1^T``.
Heads without a bias use the row sums of ``dL/dW`` as a proxy for ``dL/db`` (valid in sign when
features are non-negative, e.g. after a ReLU).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import nnls

from cotrain.audit.threat_model import ObservedUpload, head_parameter_names
from cotrain.models.blocks import BlockModel


def head_gradients(model: BlockModel, upload: ObservedUpload) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(dL/dW, dL/db)`` of a linear head, shapes ``(K, d)`` and ``(K,)`` (``None`` without bias)."""
    if not isinstance(model.head, torch.nn.Linear):
        raise TypeError(f"label recovery reads a Linear head, got {type(model.head).__name__}")
    names = head_parameter_names(model)
    dw = upload.gradients[next(n for n in names if n.endswith("weight"))]
    bias = [n for n in names if n.endswith("bias")]
    return dw, (upload.gradients[bias[0]] if bias else None)


def bias_signal(dw: torch.Tensor, db: torch.Tensor | None) -> torch.Tensor:
    """``dL/db`` when the head has a bias, else the row sums of ``dL/dW``."""
    return db if db is not None else dw.sum(dim=1)


@torch.no_grad()
def class_probability_matrix(model: BlockModel, x: torch.Tensor, y: torch.Tensor, num_classes: int, *,
                             batch_size: int = 512) -> torch.Tensor:
    """``M[j, k]``: mean softmax probability of class ``k`` over auxiliary samples of class ``j`` ``(K, K)``.

    Classes missing from the auxiliary data get the overall mean row.
    """
    model.eval()
    probs = torch.cat([torch.softmax(model(x[s:s + batch_size]), dim=1) for s in range(0, len(x), batch_size)])
    overall = probs.mean(0)
    rows = [probs[y == j].mean(0) if bool((y == j).any()) else overall for j in range(num_classes)]
    return torch.stack(rows).to(torch.float64)


def largest_remainder(q: np.ndarray, total: int, minimum: np.ndarray | None = None) -> np.ndarray:
    """Integers ``n >= minimum`` summing to ``total`` closest to ``total * q`` (largest remainders)."""
    q = np.clip(np.asarray(q, dtype=np.float64), 0.0, None)
    q = q / q.sum() if q.sum() > 0 else np.full_like(q, 1.0 / len(q))
    floor_min = np.zeros(len(q), dtype=np.int64) if minimum is None else minimum.astype(np.int64)
    if floor_min.sum() > total:  # more certainly-present classes than samples: keep the strongest
        floor_min = np.zeros_like(floor_min)
    raw = total * q
    n = np.maximum(np.floor(raw).astype(np.int64), floor_min)
    while n.sum() > total:  # shrink the entries that exceed their share most
        over = np.where(n > floor_min, n - raw, -np.inf)
        n[int(np.argmax(over))] -= 1
    while n.sum() < total:
        n[int(np.argmax(raw - n))] += 1
    return n


def recover_label_counts(db: torch.Tensor, batch_size: int, class_probs: torch.Tensor | None = None) -> torch.Tensor:
    """Estimated number of samples of each class in the batch, ``(K,)`` int64 summing to ``B``."""
    k = db.numel()
    d = db.detach().to(torch.float64).cpu().numpy()
    if batch_size == 1:
        out = np.zeros(k, dtype=np.int64)
        out[int(np.argmin(d))] = 1
        return torch.from_numpy(out)
    m = (class_probs.detach().cpu().numpy() if class_probs is not None else np.full((k, k), 1.0 / k)).astype(np.float64)
    a = (m - np.eye(k)).T
    rho = 10.0 * max(float(np.abs(a).max()), 1.0)
    q, _ = nnls(np.vstack([a, rho * np.ones((1, k))]), np.concatenate([d, [rho]]))
    present = (d < 0).astype(np.int64)
    return torch.from_numpy(largest_remainder(q, batch_size, present))


def counts_to_labels(counts: torch.Tensor) -> torch.Tensor:
    """Label vector ``(B,)`` with ``counts[k]`` copies of ``k``, sorted."""
    return torch.repeat_interleave(torch.arange(counts.numel()), counts.to(torch.long))


def recover_labels(model: BlockModel, upload: ObservedUpload, batch_size: int,
                   class_probs: torch.Tensor | None = None) -> torch.Tensor:
    """The batch's labels (an unordered multiset, returned sorted) recovered from the head's gradient."""
    dw, db = head_gradients(model, upload)
    return counts_to_labels(recover_label_counts(bias_signal(dw, db), batch_size, class_probs))


def single_sample_embedding(dw: torch.Tensor, db: torch.Tensor | None) -> torch.Tensor:
    """Exact ``E(X)`` of a batch of one: ``dL/dW[k] / dL/db[k]`` for the row with the largest ``|dL/db[k]|``.

    Without a bias the ratio is only known up to scale: the row with the largest norm is returned
    (correct in direction, hence in cosine, up to sign; the sign is fixed to a positive sum).
    """
    if db is not None:
        k = int(db.abs().argmax())
        return dw[k] / db[k]
    row = dw[int(dw.norm(dim=1).argmax())]
    return row if float(row.sum()) >= 0 else -row
