"""Private kNN labelling (Zhu, Yu, Chandraker, Wang, "Private-kNN: Practical Differential Privacy
for Computer Vision", CVPR 2020): the client labels the cloud's selected samples from its own
labelled data in feature space (ECOS downstream (c)); only the answered labels go up.

Per query q (independently):
  1. Poisson-subsample the client's data: each sample kept with probability gamma.
  2. The k nearest kept samples (L2 in feature space; all kept ones when fewer) vote: histogram
     n(q) in N^K over the K classes.
  3. Screening: answer only if max_c n_c(q) + N(0, sigma1^2) >= T.
  4. Answered: label = argmax_c (n'_c(q) + N(0, sigma2^2)), n' the votes of a second, independent
     subsample (steps 1-2 again); otherwise -1.
The second subsample makes each of the two releases exactly the Poisson-subsampled Gaussian
mechanism it is charged as; reusing the screening's subsample (as the paper's description reads)
correlates the two releases, and charging them as independently subsampled is then not proven.

Sensitivities under add/remove-one (derived here). Adding a sample x changes n(q) only if x is among
q's k nearest kept samples. With fewer than k kept samples, x adds one vote: one bin +1. With k or
more, x also pushes out the k-th neighbour: one bin +1 and one bin -1 (or no change when they share
a label). Hence every bin moves by at most 1 and
  * screening releases (a threshold of) the max count: max_c n_c moves by at most 1, Delta = 1;
  * the noisy argmax releases (the argmax of) the whole histogram: ||n - n'||_2 <= sqrt(2),
    Delta = sqrt(2). (Delta = 1 would hold only if the neighbour set could not displace; with a
    fixed k it can.)
Both are subsampled Gaussian mechanisms, rate gamma, one per query: the screening is charged for all
Q queries, the argmax only for the answered ones (the answered set is itself the screening's
output). The spends go to ``record`` as :class:`~cotrain.runtime.spend.PrivacySpend` with the noise
multiplier sigma / Delta; (epsilon, delta) comes from the accountant (RDP of the subsampled Gaussian).
Published MNIST settings: gamma 0.05, k 300, sigma1 75, T 180, sigma2 25 (for ~60,000 client
samples: with N samples the subsample keeps gamma * N, and k must stay well below that, or every
kept sample votes and the vote is the subsample's class histogram).

The feature space is the caller's: :mod:`cotrain.sampling.knn_features` gives phi or a labelled
teacher's penultimate features (Zhu et al. use the latter kind); it must not depend on the client's
data, or the sensitivities above do not hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from cotrain.errors import ConfigError
from cotrain.runtime.spend import PrivacySpend

SCREENING_SENSITIVITY = 1.0
ARGMAX_SENSITIVITY = math.sqrt(2.0)


@dataclass
class KnnLabels:
    """The client's answer. Only ``labels[answered]`` leaves the client.

    Attributes:
        labels: int64 (Q,), the noisy-argmax label, -1 where unanswered.
        answered: bool (Q,).
        votes: float32 (Q, K), the exact screening vote histograms (client-side diagnostics; never sent).
        argmax_votes: float32 (Q, K), the exact histograms of the argmax's own subsample (same).
        spends: the spends recorded (screening, then the argmax when any query was answered).
    """

    labels: torch.Tensor
    answered: torch.Tensor
    votes: torch.Tensor
    argmax_votes: torch.Tensor
    spends: tuple[PrivacySpend, ...] = field(default_factory=tuple)

    @property
    def num_answered(self) -> int:
        return int(self.answered.sum())

    @property
    def answer_rate(self) -> float:
        return self.num_answered / max(len(self.answered), 1)


def knn_votes(query_features: torch.Tensor, client_features: torch.Tensor, client_labels: torch.Tensor, *,
              num_classes: int, k: int, keep: torch.Tensor) -> torch.Tensor:
    """Exact vote histograms (Q, K): for each query, the labels of its k nearest client samples among
    those with ``keep[q, i]`` True (``keep`` bool (Q, N))."""
    d = torch.cdist(query_features.float(), client_features.float())
    d = torch.where(keep, d, torch.full_like(d, math.inf))
    kk = min(k, d.shape[1])
    dist, idx = d.topk(kk, dim=1, largest=False)
    valid = torch.isfinite(dist).float()
    votes = torch.zeros(len(query_features), num_classes)
    return votes.scatter_add_(1, client_labels[idx], valid)


def private_knn_labels(query_features: torch.Tensor, client_features: torch.Tensor, client_labels: torch.Tensor,
                       *, num_classes: int, sampling_rate: float = 0.05, k: int = 300, sigma1: float = 75.0,
                       threshold: float = 180.0, sigma2: float = 25.0, generator: torch.Generator, party: str,
                       round: int, record: Callable[[PrivacySpend], None], chunk: int = 256) -> KnnLabels:
    """Label ``query_features`` (Q, d) from ``client_features`` (N, d) with ``client_labels`` (N,) in
    0..num_classes-1, by the mechanism of the module docstring. Draws, in order, per chunk of
    ``chunk`` queries the screening's and the argmax's (chunk, N) subsamples, then the screening
    noise (Q,) and the argmax noise (Q, K) for every query (so one seed gives one answer whatever is
    answered)."""
    if not 0.0 < sampling_rate <= 1.0:
        raise ConfigError(f"private kNN sampling_rate must be in (0, 1], got {sampling_rate}")
    if k < 1 or sigma1 <= 0 or sigma2 <= 0:
        raise ConfigError(f"private kNN needs k >= 1, sigma1 > 0, sigma2 > 0; got {k}, {sigma1}, {sigma2}")
    if query_features.ndim != 2 or client_features.ndim != 2 or query_features.shape[1] != client_features.shape[1]:
        raise ConfigError(f"features must be (Q, d) and (N, d), got {tuple(query_features.shape)} and "
                          f"{tuple(client_features.shape)}")
    if len(client_labels) != len(client_features) or len(client_labels) == 0:
        raise ConfigError(f"need one label per client sample, got {len(client_labels)} for {len(client_features)}")
    if int(client_labels.min()) < 0 or int(client_labels.max()) >= num_classes:
        raise ConfigError(f"client labels must be in 0..{num_classes - 1}")
    q, n = len(query_features), len(client_features)
    labels_long = client_labels.long()
    screen_parts, argmax_parts = [], []
    for s in range(0, q, chunk):
        qf = query_features[s:s + chunk]
        for parts in (screen_parts, argmax_parts):
            keep = torch.rand(len(qf), n, generator=generator) < sampling_rate
            parts.append(knn_votes(qf, client_features, labels_long, num_classes=num_classes, k=k, keep=keep))
    votes = torch.cat(screen_parts) if q else torch.zeros(0, num_classes)
    argmax_votes = torch.cat(argmax_parts) if q else torch.zeros(0, num_classes)
    screen_noise = torch.randn(q, generator=generator) * sigma1
    argmax_noise = torch.randn(q, num_classes, generator=generator) * sigma2
    answered = (votes.max(dim=1).values + screen_noise >= threshold) if q else torch.zeros(0, dtype=torch.bool)
    noisy_label = (argmax_votes + argmax_noise).argmax(dim=1) if q else torch.zeros(0, dtype=torch.long)
    labels = torch.where(answered, noisy_label, torch.full_like(noisy_label, -1))
    spends = []
    if q:
        spends.append(PrivacySpend(round, party, "gaussian", noise_multiplier=sigma1 / SCREENING_SENSITIVITY,
                                   sensitivity=SCREENING_SENSITIVITY, sampling_rate=sampling_rate, count=q,
                                   release="knn_screening"))
    n_answered = int(answered.sum())
    if n_answered:
        spends.append(PrivacySpend(round, party, "gaussian", noise_multiplier=sigma2 / ARGMAX_SENSITIVITY,
                                   sensitivity=ARGMAX_SENSITIVITY, sampling_rate=sampling_rate, count=n_answered,
                                   release="knn_argmax"))
    for spend in spends:
        record(spend)
    return KnnLabels(labels=labels, answered=answered, votes=votes, argmax_votes=argmax_votes, spends=tuple(spends))
