"""One call: audit an upload with the server's auxiliary data.

``audit_upload(model, upload, aux, attribute="gender")`` runs, strictly on the server side:

1. the shared model of the upload (``upload.model_state`` loaded into a copy of ``model``);
   when the upload's metadata has no batch size, ``B`` is estimated from the gradient and ``aux``
   (:func:`~cotrain.audit.batch_size.estimate_batch_size`);
2. the server's knowledge from ``aux`` only: last-block inputs (reconstruction prior), the class
   probability matrix ``M`` (label-count recovery) and the attribute classifier on ``E(x_aux)``;
3. :func:`~cotrain.audit.feature_reconstruction.reconstruct_features` on the observed gradient;
4. attribute inference on each reconstructed ``E(X_hat)``.

It never reads the participant's data; scoring against the truth is :mod:`cotrain.audit.scoring`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from cotrain.audit.attribute_inference import AttributeClassifier, extract_features
from cotrain.audit.batch_size import BatchSizeEstimate, estimate_batch_size
from cotrain.audit.feature_reconstruction import (AuxiliaryPrior, ReconstructionSettings, auxiliary_prior,
                                                  reconstruct_features)
from cotrain.audit.labels import class_probability_matrix
from cotrain.audit.threat_model import ObservedUpload
from cotrain.data.base import ArrayDataset
from cotrain.models.blocks import BlockModel


@dataclass
class ServerKnowledge:
    """What the server derives from its auxiliary data and the shared model of one round."""

    prior: AuxiliaryPrior
    class_probs: torch.Tensor
    classifier: AttributeClassifier | None


def auxiliary_sample(aux: ArrayDataset, *, max_samples: int = 2000, seed: int = 0) -> torch.Tensor:
    """Indices of the (at most ``max_samples``) auxiliary samples the server uses."""
    if len(aux) == 0:
        raise ValueError("the server's auxiliary data set is empty")
    return torch.randperm(len(aux), generator=torch.Generator().manual_seed(seed))[:min(len(aux), max_samples)]


def server_knowledge(shared: BlockModel, aux: ArrayDataset, attribute: str | None, *,
                     max_samples: int = 2000, seed: int = 0) -> ServerKnowledge:
    """Prior, class-probability matrix and attribute classifier from ``aux`` (at most ``max_samples``)."""
    idx = auxiliary_sample(aux, max_samples=max_samples, seed=seed)
    x, y = aux.x[idx], aux.y[idx]
    num_classes = aux.num_classes or int(y.max()) + 1
    classifier = None
    if attribute is not None:
        if attribute not in aux.attributes:
            raise KeyError(f"auxiliary data has no attribute {attribute!r}; it has {sorted(aux.attributes)}")
        classifier = AttributeClassifier(seed=seed).fit(extract_features(shared, x), aux.attributes[attribute][idx])
    return ServerKnowledge(prior=auxiliary_prior(shared, x, y),
                           class_probs=class_probability_matrix(shared, x, y, num_classes), classifier=classifier)


@dataclass
class AuditResult:
    """Per-sample reconstruction and attribute inference of one upload.

    ``features`` ``(B, *S)`` (last-block inputs), ``embeddings`` ``(B, d)``, ``labels`` ``(B,)``;
    ``attribute_predictions`` ``(B,)`` and ``attribute_proportion`` ``(V,)`` when an attribute was asked.
    ``batch_size``: the ``B`` used; ``batch_size_estimate`` is set when the upload's metadata lacked
    it and ``B`` was estimated (``batch_size_estimated``).
    """

    features: torch.Tensor
    embeddings: torch.Tensor
    labels: torch.Tensor
    attribute_predictions: np.ndarray | None
    attribute_proportion: np.ndarray | None
    equations_per_unknown: float
    equations_per_embedding_unknown: float
    objective: float
    seconds: float
    batch_size: int
    batch_size_estimate: BatchSizeEstimate | None = None

    @property
    def batch_size_estimated(self) -> bool:
        return self.batch_size_estimate is not None


def audit_upload(model: BlockModel, upload: ObservedUpload, aux: ArrayDataset, *, attribute: str | None = None,
                 settings: ReconstructionSettings = ReconstructionSettings(),
                 knowledge: ServerKnowledge | None = None) -> AuditResult:
    """Reconstruct the batch's features from ``upload`` and infer ``attribute`` for each sample.

    ``model`` gives the architecture (its weights are not used: the upload's state is).
    Pass ``knowledge`` to reuse the server's auxiliary computations across uploads of one round.
    Without ``upload.batch_size``, ``B`` is estimated from the gradient and ``aux`` (recorded in the result).
    """
    shared = upload.shared_model(model)
    estimate = None
    if upload.batch_size is None:
        idx = auxiliary_sample(aux, seed=settings.seed)
        estimate = estimate_batch_size(shared, upload, aux.x[idx], aux.y[idx])
        upload = replace(upload, batch_size=estimate.estimate)
    know = knowledge or server_knowledge(shared, aux, attribute, seed=settings.seed)
    rec = reconstruct_features(shared, upload, prior=know.prior, settings=settings, class_probs=know.class_probs)
    preds = prop = None
    if know.classifier is not None:
        inf = know.classifier.infer(rec.embeddings)
        preds, prop = inf.predictions, inf.proportion
    return AuditResult(features=rec.features, embeddings=rec.embeddings, labels=rec.labels,
                       attribute_predictions=preds, attribute_proportion=prop,
                       equations_per_unknown=rec.equations_per_unknown,
                       equations_per_embedding_unknown=rec.equations_per_embedding_unknown,
                       objective=rec.objective, seconds=rec.seconds, batch_size=int(upload.batch_size),
                       batch_size_estimate=estimate)
