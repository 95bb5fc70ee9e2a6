"""Adversarial domain losses, as small functions any backbone can use.

ADDA (Tzeng et al., "Adversarial Discriminative Domain Adaptation", CVPR 2017) and the patent
"Model training method and computing node based on federated transfer learning" both train a
domain discriminator D on the features f = G(x) of a feature extractor G, and then train G so
that D can no longer tell the domains apart.

Conventions (used everywhere in :mod:`cotrain.transfer`):

* D returns one logit per sample, shape ``(B,)``; ``sigmoid(D(f))`` is the probability that ``f``
  came from the **source** domain (label ``SOURCE_LABEL = 1``; target is ``TARGET_LABEL = 0``).
* Every loss is a mean over its batch and returns a scalar tensor.

The discriminator loss (ADDA eq. 7)::

    L_D = - E_{x_s} log sigmoid(D(G_s(x_s))) - E_{x_t} log(1 - sigmoid(D(G_t(x_t))))

In the federated protocol a node holds one domain only, so either term may be absent: a source
node minimises the first term on its own features, the target node the second on its own, and the
average of their discriminators stands in for the pooled one.

The confusion (generator) loss is the GAN loss with inverted labels (ADDA eq. 9): features of one
domain are pushed to be classified as the other::

    L_conf(f, appear_as=d) = - E log p_D(d | f)
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

SOURCE_LABEL = 1.0
TARGET_LABEL = 0.0
DOMAINS = {"source": SOURCE_LABEL, "target": TARGET_LABEL}


def _domain_label(domain: str) -> float:
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {sorted(DOMAINS)}, got {domain!r}")
    return DOMAINS[domain]


def domain_bce(logits: torch.Tensor, domain: str) -> torch.Tensor:
    """Binary cross-entropy of D's logits ``(B,)`` against the constant label of ``domain``.

    ``domain_bce(l, "source") = -mean log sigmoid(l)``; ``domain_bce(l, "target") = -mean log(1 - sigmoid(l))``.
    """
    if logits.ndim != 1:
        raise ValueError(f"discriminator logits must have shape (B,), got {tuple(logits.shape)}")
    target = torch.full_like(logits, _domain_label(domain))
    return F.binary_cross_entropy_with_logits(logits, target)


def discriminator_loss(source_logits: torch.Tensor | None = None,
                       target_logits: torch.Tensor | None = None) -> torch.Tensor:
    """ADDA's L_D: source features labelled 1, target features labelled 0; either may be None.

    With both present the two terms are added (each a batch mean), as in ADDA eq. 7. A node of the
    federated protocol holds one domain and passes only its own side.
    """
    if source_logits is None and target_logits is None:
        raise ValueError("discriminator_loss needs source logits, target logits, or both")
    terms = []
    if source_logits is not None:
        terms.append(domain_bce(source_logits, "source"))
    if target_logits is not None:
        terms.append(domain_bce(target_logits, "target"))
    return torch.stack(terms).sum()


def confusion_loss(logits: torch.Tensor, *, appear_as: str) -> torch.Tensor:
    """Inverted-label GAN loss: make D classify these features as ``appear_as``.

    ADDA trains the target encoder with ``appear_as="source"``; in the patent's step 5 a source node
    trains its G_s with ``appear_as="target"`` against the fixed aggregate discriminator D_all.
    """
    return domain_bce(logits, appear_as)


def adversarial_task_loss(task_logits: torch.Tensor, labels: torch.Tensor, domain_logits: torch.Tensor, *,
                          weight: float, appear_as: str = "target") -> torch.Tensor:
    """The patent's step-5 objective for a source node (D fixed)::

        L = CE(T(G(x_s)), y_s) + weight * L_conf(D(G(x_s)), appear_as)

    Shapes: ``task_logits`` (B, K), ``labels`` (B,), ``domain_logits`` (B,).
    """
    return F.cross_entropy(task_logits, labels) + float(weight) * confusion_loss(domain_logits, appear_as=appear_as)
