"""Client-side DP-FedAvg: each participant clips its update and adds Gaussian noise before sending.

DP-FedAvg (McMahan et al., "Learning Differentially Private Recurrent Language Models", ICLR 2018)
with the noise placed on the participant, like a local-DP version of Flower's client-side wrappers.
With the global parameters w (the request's tensors) and the participant's trained parameters w_k
(its reply's), the upload in round t is

    Delta_k = clip(w_k - w, C) = (w_k - w) * min(1, C / ||w_k - w||_2)      (all floating tensors jointly)
    upload  = w + Delta_k + N(0, (sigma * C)^2 I)

so ``||Delta_k||_2 <= C``: adding or removing this participant's contribution moves what it sends by
at most C (L2), and the upload is a Gaussian release with noise multiplier sigma. For a gradient
upload (FedSGD, ``values["upload"] == "gradient"``) the gradient g itself is clipped and noised:
``clip(g, C) + N(0, (sigma C)^2 I)``.

Why sigma * C per participant and not Flower's share sigma * C / sqrt(n): a share that small is
private only when nobody sees an individual upload (secure aggregation, so that the n shares add up
to one N(0, (sigma C)^2) on the sum). Here the server receives every upload as sent, so each upload
must be private on its own: it carries the full noise, and the spend it carries states exactly that
(party = this participant, noise multiplier sigma, sensitivity C, sampling rate 1). The mean of n
such uploads then has noise std sigma C / sqrt(n), more than the central placement's sigma C / n
(:mod:`cotrain.aggregation.rules.dp_fedavg`): the price of not trusting the server.

No amplification by sampling: the server chose this participant and knows it took part, so the
account against the server is one full Gaussian release per round taken part in, and the ledger
holds exactly those. ``sampling_rate`` therefore must be 1; an account amplified by participant
sampling belongs to the server-side placement, which records a spend every round.

With noise on, the reply's data-dependent values that are not noised (``train_loss``,
``metrics``) are withheld (NaN / empty): they would void the claim. ``num_examples`` and
``batch_size`` are kept for the server's weighting and are not protected (treat them as public).

Only FedAvg / FedSGD train replies (kind ``"train"``) are touched: evaluation replies and the
messages of split learning and FADA pass unchanged, so they carry no spend and no claim.
"""

from __future__ import annotations

from typing import ClassVar

import math

import torch

from cotrain.behaviours.base import Behaviour, BehaviourContext, register_defence
from cotrain.privacy import clip_l2, gaussian_mechanism
from cotrain.privacy import parameters as check
from cotrain.privacy.parameters import PrivacyParameterError
from cotrain.runtime.message import Message
from cotrain.runtime.spend import PrivacySpend

TRAIN = "train"  # the FedAvg protocol's message kind (cotrain.federated sits above behaviours)


@register_defence("dp_client")
class DPClient(Behaviour):
    """Clip every FedAvg train reply's update to ``clip_norm`` and add N(0, (noise_multiplier * clip_norm)^2).

    Args:
        clip_norm: the L2 bound C on the update (None: no clipping; then noise_multiplier must be 0).
        noise_multiplier: sigma >= 0 (0: clip only, no noise, no spend and no privacy claim).
        sampling_rate: must be 1 (see the module docstring: no amplification against the server).

    With ``noise_multiplier=0`` and ``clip_norm=None`` replies leave unchanged, bit for bit.
    """

    methods: ClassVar[tuple[str, ...]] = ("fedavg",)  # acts on FedAvg / FedSGD train replies only

    def __init__(self, *, clip_norm: float | None, noise_multiplier: float, sampling_rate: float = 1.0) -> None:
        self.clip_norm, self.noise_multiplier = check.clip_and_noise(clip_norm, noise_multiplier, "dp_client")
        self.sampling_rate = check.sampling_rate(sampling_rate, "dp_client: sampling_rate")
        if self.sampling_rate != 1.0:
            raise PrivacyParameterError(
                f"dp_client: sampling_rate must be 1, got {sampling_rate}: the server knows whom it sampled, so an "
                "upload gets no amplification; use the server-side aggregator 'dp_fedavg' for a sampled account")

    def on_reply(self, reply: Message, request: Message, context: BehaviourContext) -> Message:
        if (self.clip_norm is None and self.noise_multiplier == 0) or request.kind != TRAIN:
            return reply
        upload = str(reply.values.get("upload", request.values.get("upload", "parameters")))
        if upload not in ("parameters", "gradient"):
            raise PrivacyParameterError(f"dp_client: unknown upload {upload!r}; expected 'parameters' or 'gradient'")
        if "round" not in request.values:
            raise PrivacyParameterError("dp_client: the train request carries no values['round']")
        rnd = int(request.values["round"])
        names = [n for n, t in reply.tensors.items() if t.is_floating_point()]
        if upload == "parameters":
            missing = [n for n in names if n not in request.tensors]
            if missing:
                raise PrivacyParameterError(f"dp_client: reply tensors {missing[:3]} are not in the request, "
                                            "so their update is unknown")
            start = {n: request.tensors[n].detach().to(torch.float64) for n in names}
        else:  # a gradient is its own update
            start = {n: torch.zeros_like(reply.tensors[n], dtype=torch.float64) for n in names}
        update = {n: reply.tensors[n].detach().to(torch.float64) - start[n] for n in names}
        if self.clip_norm is not None:
            update, _ = clip_l2(update, max_norm=self.clip_norm)
        spends: list[PrivacySpend] = []
        values = dict(reply.values)
        if self.noise_multiplier > 0:
            assert self.clip_norm is not None
            update = gaussian_mechanism(update, sensitivity=self.clip_norm, noise_multiplier=self.noise_multiplier,
                                        generator=context.generator("dp_client", rnd), party=context.participant_id,
                                        round=rnd, record=spends.append, sampling_rate=self.sampling_rate,
                                        release=upload if upload == "gradient" else "update")
            values.update(train_loss=math.nan, metrics={})  # unnoised functions of the data: withheld
        tensors = {n: (start[n] + update[n]).to(t.dtype) if n in update else t.detach().clone()
                   for n, t in reply.tensors.items()}
        return Message(reply.kind, tensors=tensors, values=values, payload=reply.payload,
                       spends=tuple(reply.spends) + tuple(spends))
