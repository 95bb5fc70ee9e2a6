"""Attribute inference from reconstructed features (patent CN114287009A, step 2).

The server passes its own auxiliary labelled data ``(x_aux, a_aux)`` through the current shared
model, giving features ``F_aux = E(x_aux)`` (``(N, d)``) or ``f_n(x_aux)`` flattened, and fits a
classifier ``h: features -> attribute``. Applied to each reconstructed feature ``e_hat_i`` it gives a
per-sample prediction ``a_hat_i = h(e_hat_i)`` and the batch's attribute distribution
``pi_hat[v] = (1/B) sum_i P(a = v | e_hat_i)``.

Reconstructions are only trusted in direction (they are scored on cosine), so every feature is
L2-normalised before the classifier (a scale-free input), then standardised; the classifier is
multinomial logistic regression (scikit-learn).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from cotrain.models.blocks import BlockModel

LEVELS = ("embedding", "block_input")


@torch.no_grad()
def extract_features(model: BlockModel, x: torch.Tensor, *, level: str = "embedding",
                     batch_size: int = 512) -> torch.Tensor:
    """``E(x)`` (``level="embedding"``, ``(N, d)``) or ``f_n(x)`` flattened (``"block_input"``)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    model.eval()
    upto = model.num_blocks if level == "embedding" else model.num_blocks - 1
    out = [model.features(x[s:s + batch_size], upto).reshape(min(batch_size, len(x) - s), -1)
           for s in range(0, len(x), batch_size)]
    return torch.cat(out)


def _l2_normalise(a: np.ndarray) -> np.ndarray:
    return a / np.clip(np.linalg.norm(a, axis=1, keepdims=True), 1e-12, None)


@dataclass
class AttributeInference:
    """Per-sample predictions ``(B,)``, their probabilities ``(B, V)`` and the batch distribution ``(V,)``."""

    predictions: np.ndarray
    probabilities: np.ndarray
    proportion: np.ndarray


class AttributeClassifier:
    """Logistic regression on L2-normalised, standardised features of the server's auxiliary data."""

    def __init__(self, *, c: float = 1.0, max_iter: int = 500, seed: int = 0) -> None:
        self.pipeline = make_pipeline(FunctionTransformer(_l2_normalise), StandardScaler(),
                                      LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
        self.num_values = 0

    def fit(self, features: torch.Tensor, attribute: torch.Tensor) -> "AttributeClassifier":
        f = features.reshape(features.shape[0], -1).detach().cpu().numpy().astype(np.float64)
        a = attribute.detach().cpu().numpy().astype(np.int64)
        self.num_values = int(a.max()) + 1
        self.pipeline.fit(f, a)
        return self

    def infer(self, features: torch.Tensor) -> AttributeInference:
        f = features.reshape(features.shape[0], -1).detach().cpu().numpy().astype(np.float64)
        proba_known = self.pipeline.predict_proba(f)
        proba = np.zeros((len(f), self.num_values))
        proba[:, self.pipeline.classes_] = proba_known
        return AttributeInference(predictions=proba.argmax(1), probabilities=proba, proportion=proba.mean(0))


def fit_attribute_classifier(model: BlockModel, x_aux: torch.Tensor, attribute_aux: torch.Tensor, *,
                             level: str = "embedding", seed: int = 0) -> AttributeClassifier:
    """Fit the server's attribute classifier on its auxiliary data seen through the shared ``model``."""
    return AttributeClassifier(seed=seed).fit(extract_features(model, x_aux, level=level), attribute_aux)
