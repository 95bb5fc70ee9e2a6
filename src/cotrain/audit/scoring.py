"""Scoring an audit against the ground truth (experiment side only; never given to the attack).

* Matching: the reconstruction is an unordered set, so reconstructed sample ``i`` is matched to
  true sample ``pi(i)`` by the Hungarian assignment (``scipy.optimize.linear_sum_assignment``)
  maximising the total cosine similarity ``sum_i cos(x_hat_i, x_pi(i))`` of the flattened features.
* Success rate: the share of samples whose matched cosine exceeds 0.95, reported at two levels:
  ``X`` (the input of the last block, ``f_n``'s output) and ``E(X)`` (the last block's output).
* Attribute accuracy: ``mean_i [a_hat_i == a_pi(i)]`` under the ``E(X)`` matching.
* Proportion error: ``|mean_i a_hat_i - mean_i a_i|`` for a binary attribute (L1 over the
  categories / 2 for more), needs no matching.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

SUCCESS_COSINE = 0.95


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise cosines ``(B_a, B_b)`` of flattened rows."""
    a = a.reshape(a.shape[0], -1).to(torch.float64)
    b = b.reshape(b.shape[0], -1).to(torch.float64)
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return a @ b.T


@dataclass
class Matching:
    """``order[i]``: index of the true sample matched to reconstruction ``i``; ``cosines[i]`` its cosine."""

    order: np.ndarray
    cosines: np.ndarray

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.cosines > SUCCESS_COSINE)) if len(self.cosines) else float("nan")

    @property
    def mean_cosine(self) -> float:
        return float(np.mean(self.cosines)) if len(self.cosines) else float("nan")


def match(reconstructed: torch.Tensor, true: torch.Tensor) -> Matching:
    """Hungarian matching of reconstructed to true samples on cosine similarity."""
    if reconstructed.shape[0] != true.shape[0]:
        raise ValueError(f"{reconstructed.shape[0]} reconstructed vs {true.shape[0]} true samples")
    cos = cosine_matrix(reconstructed, true).cpu().numpy()
    rows, cols = linear_sum_assignment(-cos)
    order = np.empty(len(rows), dtype=np.int64)
    order[rows] = cols
    return Matching(order=order, cosines=cos[np.arange(len(order)), order])


def score_reconstruction(reconstructed: torch.Tensor, true: torch.Tensor,
                         center: torch.Tensor | None = None) -> dict[str, float]:
    """``{"success_rate", "mean_cosine"}`` of one level.

    With ``center`` (e.g. the mean auxiliary feature, shape ``(*S)``) the scores are repeated on
    centred features (``..._centred`` keys): features after a ReLU share a large common direction,
    so raw cosines are high even for unrelated samples; centring removes what every sample shares.
    """
    m = match(reconstructed, true)
    out = {"success_rate": m.success_rate, "mean_cosine": m.mean_cosine}
    if center is not None:
        c = center.reshape(1, *true.shape[1:])
        mc = match(reconstructed - c, true - c)
        out.update({"success_rate_centred": mc.success_rate, "mean_cosine_centred": mc.mean_cosine})
    return out


def attribute_accuracy(predicted: torch.Tensor, true: torch.Tensor, matching: Matching | None = None) -> float:
    """Per-sample accuracy; ``predicted[i]`` is compared with ``true[matching.order[i]]`` (identity without matching)."""
    p = np.asarray(predicted).reshape(-1)
    t = np.asarray(true).reshape(-1)
    if matching is not None:
        t = t[matching.order]
    return float(np.mean(p == t)) if len(p) else float("nan")


def proportion_error(predicted_proportion: np.ndarray | torch.Tensor, true: torch.Tensor, num_values: int) -> float:
    """Total-variation distance between the predicted and the true attribute distribution of the batch."""
    p = np.asarray(predicted_proportion, dtype=np.float64).reshape(-1)
    t = np.bincount(np.asarray(true).reshape(-1), minlength=num_values).astype(np.float64)
    t /= max(t.sum(), 1.0)
    return float(0.5 * np.abs(p[:num_values] - t[:num_values]).sum() + 0.5 * np.abs(p[num_values:]).sum())
