"""Server-side DP-FedAvg (McMahan et al., "Learning Differentially Private Recurrent Language
Models", ICLR 2018; the placement of Flower's ``DifferentialPrivacyServerSideFixedClipping``).

With the round's n uploads as updates Delta_k = w_k - w (rows of ``updates``, shape (n, d)):

    Delta_k' = Delta_k * min(1, C / ||Delta_k||_2)                     (clip each update)
    Delta    = (1 / n) sum_k Delta_k' + N(0, (sigma * C / n)^2 I)     (equal weights, fixed denominator)

The mean's L2 sensitivity to adding or removing one participant is C / n, so the noise std
sigma * C / n makes the release a Gaussian mechanism with noise multiplier sigma, recorded as one
spend per round (party ``"server"``, release ``"aggregate"``, sensitivity C / n, the configured
sampling rate q) in :attr:`Aggregate.spends`; the server loop puts it on the ledger.

Equal weights replace FedAvg's example weighting on purpose: with weights n_k / sum_j n_j a
participant's influence (and so the sensitivity) depends on its own, private, example count and
can approach its whole update; a fixed denominator (McMahan et al.'s estimator with w_k = 1 and
denominator n) bounds every participant's influence by C / n whatever the data. n is the number of
uploads, which the server's sampling settings fix in advance (a fixed-size sample).

The noise protects participants against whoever sees the global models (other participants, users
of the model); it does not protect them against the server, which sees every upload before noise.
With no clipping and no noise the rule is the unweighted mean of the uploads.

Without a reference state (FedSGD) the uploads are taken to be gradients and clipped as sent. A
protocol that uploads parameters without a reference (FADA's G/T/D today) would have its
parameters themselves clipped: do not use this rule there.
"""

from __future__ import annotations

from typing import ClassVar

from typing import Sequence

import torch

from cotrain.aggregation.base import Aggregator, Combined, RoundContext, register_aggregator
from cotrain.aggregation.records import Aggregate, Upload
from cotrain.privacy import gaussian_mechanism
from cotrain.privacy import parameters as check
from cotrain.runtime.spend import PrivacySpend
from cotrain.seeding import torch_generator


@register_aggregator("dp_fedavg")
class DPFedAvg(Aggregator):
    """Clip each update to ``clip_norm``, average with equal weights, add N(0, (sigma C / n)^2).

    Args:
        clip_norm: the bound C (None: no clipping; then noise_multiplier must be 0).
        noise_multiplier: sigma >= 0 (0: no noise, no spend, no privacy claim).
        sampling_rate: the probability q that a participant takes part in a round, as the server's
            sampling settings make it (e.g. participants_per_round / N), stated, never inferred. The
            accountant treats it as Poisson sampling; the server's fixed-size sample without
            replacement is the usual approximation of it.
    """

    methods: ClassVar[tuple[str, ...]] = ("fedavg", "split")  # needs a reference state to clip updates

    on_updates = True  # clipping is on updates w_k - w, not on parameters

    def __init__(self, *, clip_norm: float | None, noise_multiplier: float, sampling_rate: float = 1.0) -> None:
        self.clip_norm, self.noise_multiplier = check.clip_and_noise(clip_norm, noise_multiplier, "dp_fedavg")
        self.sampling_rate = check.sampling_rate(sampling_rate, "dp_fedavg: sampling_rate")
        self._spends: list[PrivacySpend] = []

    def combine(self, updates: torch.Tensor, weights: torch.Tensor, ids: list[str],
                context: RoundContext) -> Combined:
        n = updates.shape[0]
        rows = updates
        if self.clip_norm is not None:
            norms = rows.norm(dim=1)
            scale = torch.where(norms > self.clip_norm, self.clip_norm / norms.clamp_min(1e-300),
                                torch.ones_like(norms))
            rows = rows * scale[:, None]
        mean = rows.sum(dim=0) / n
        info: dict[str, float] = {}
        if self.noise_multiplier > 0:
            assert self.clip_norm is not None
            mean = gaussian_mechanism(mean, sensitivity=self.clip_norm / n, noise_multiplier=self.noise_multiplier,
                                      generator=torch_generator(context.seed, "dp_fedavg"), party="server",
                                      round=context.round, record=self._spends.append,
                                      sampling_rate=self.sampling_rate, release="aggregate")
            info["noise_std"] = self.noise_multiplier * self.clip_norm / n  # data-independent, safe to publish
        # no per-participant norms in scores: the round record is published and they are not noised
        return Combined(mean, weights={pid: 1.0 / n for pid in ids}, info=info)

    def aggregate(self, uploads: Sequence[Upload], context: RoundContext) -> Aggregate:
        self._spends = []
        out = super().aggregate(uploads, context)
        out.spends = list(self._spends)
        return out
