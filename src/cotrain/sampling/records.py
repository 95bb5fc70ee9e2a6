"""Typed payloads of the ECOS protocol and their conversion to and from messages.

Down (cloud -> client): the encoder's hash (an offer), the encoder itself if the client lacks it,
the K centroids with the score rule and the privacy request, and a model to evaluate.
Up (client -> cloud): whether it holds the encoder, the noisy score vector (K,) with its
``PrivacySpend``, and a test accuracy. Nothing sized like the client's data goes up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from cotrain.runtime.message import Message, PayloadKind
from cotrain.runtime.spend import PrivacySpend
from cotrain.sampling.encoder import ConvEncoder, EncoderConfig, encoder_from_state, encoder_state

OFFER = "ecos_offer"
ENCODER = "ecos_encoder"
COVERAGE = "ecos_coverage"
EVALUATE = "ecos_evaluate"


@dataclass
class EncoderOffer:
    """Cloud -> client: "I will encode with this phi"; the reply says whether the client holds it."""

    encoder_hash: str
    has_encoder: bool = False

    def to_message(self) -> Message:
        return Message(OFFER, values={"encoder_hash": self.encoder_hash, "has_encoder": self.has_encoder})

    @classmethod
    def from_message(cls, m: Message) -> "EncoderOffer":
        return cls(encoder_hash=str(m.values["encoder_hash"]), has_encoder=bool(m.values["has_encoder"]))


@dataclass
class EncoderTransfer:
    """Cloud -> client: phi's architecture and weights."""

    encoder: ConvEncoder
    encoder_hash: str

    def to_message(self) -> Message:
        return Message(ENCODER, tensors=encoder_state(self.encoder), payload=PayloadKind.PARAMETERS,
                       values={"config": self.encoder.config.to_json(), "encoder_hash": self.encoder_hash})

    @classmethod
    def from_message(cls, m: Message) -> "EncoderTransfer":
        enc = encoder_from_state(EncoderConfig.from_json(m.values["config"]), dict(m.tensors))
        return cls(encoder=enc, encoder_hash=str(m.values["encoder_hash"]))


@dataclass
class CoverageRequest:
    """Cloud -> client: the centroids (K, D), the score rule and the privacy asked for.

    ``epsilon = inf`` asks for exact scores (no noise, no spend); ``noise_multiplier`` set
    overrides ``epsilon``.
    """

    centroids: torch.Tensor
    encoder_hash: str
    rule: str
    rule_options: dict = field(default_factory=dict)
    epsilon: float = 1.0
    delta: float = 1e-5
    noise_multiplier: float | None = None
    round: int = 0

    def to_message(self) -> Message:
        return Message(COVERAGE, tensors={"centroids": self.centroids.to(torch.float32)},
                       payload=PayloadKind.STATISTICS, values={
                           "round": self.round, "encoder_hash": self.encoder_hash, "rule": self.rule,
                           "rule_options": dict(self.rule_options), "epsilon": float(self.epsilon),
                           "delta": float(self.delta), "noise_multiplier": self.noise_multiplier})

    @classmethod
    def from_message(cls, m: Message) -> "CoverageRequest":
        v = m.values
        nm = v.get("noise_multiplier")
        return cls(centroids=m.tensors["centroids"], encoder_hash=str(v["encoder_hash"]), rule=str(v["rule"]),
                   rule_options=dict(v.get("rule_options", {})), epsilon=float(v["epsilon"]),
                   delta=float(v["delta"]), noise_multiplier=None if nm is None else float(nm),
                   round=int(v["round"]))

    @property
    def noised(self) -> bool:
        return self.noise_multiplier is not None or math.isfinite(self.epsilon)


@dataclass
class CoverageReply:
    """Client -> cloud: the (noisy) score vector (K,) and the spends of its release."""

    scores: torch.Tensor
    sensitivity: float
    spends: tuple[PrivacySpend, ...] = ()

    def to_message(self) -> Message:
        return Message(COVERAGE, tensors={"scores": self.scores.to(torch.float32)},
                       payload=PayloadKind.STATISTICS, values={"sensitivity": float(self.sensitivity)},
                       spends=self.spends)

    @classmethod
    def from_message(cls, m: Message) -> "CoverageReply":
        return cls(scores=m.tensors["scores"], sensitivity=float(m.values["sensitivity"]), spends=m.spends)


@dataclass
class EvaluateRequest:
    """Cloud -> client: a model (a registered zoo name, its options, its parameters) to test."""

    parameters: dict[str, torch.Tensor]
    model: str
    options: dict = field(default_factory=dict)

    def to_message(self) -> Message:
        return Message(EVALUATE, tensors=self.parameters, payload=PayloadKind.PARAMETERS,
                       values={"model": self.model, "options": dict(self.options)})

    @classmethod
    def from_message(cls, m: Message) -> "EvaluateRequest":
        return cls(parameters=dict(m.tensors), model=str(m.values["model"]), options=dict(m.values["options"]))


@dataclass
class EvaluateReply:
    """Client -> cloud: only the test accuracy and how many test samples it was measured on."""

    accuracy: float
    num_examples: int

    def to_message(self) -> Message:
        return Message(EVALUATE, values={"accuracy": self.accuracy, "num_examples": self.num_examples})

    @classmethod
    def from_message(cls, m: Message) -> "EvaluateReply":
        return cls(accuracy=float(m.values["accuracy"]), num_examples=int(m.values["num_examples"]))


KNN = "ecos_knn_label"


@dataclass
class KnnLabelRequest:
    """Cloud -> client: phi of the selected (public) pool samples (Q, D) and the private-kNN settings
    (``sampling_rate``, ``k``, ``sigma1``, ``threshold``, ``sigma2``; keyword options of
    :func:`~cotrain.sampling.private_knn.private_knn_labels`)."""

    features: torch.Tensor
    options: dict = field(default_factory=dict)
    round: int = 0

    def to_message(self) -> Message:
        return Message(KNN, tensors={"features": self.features.to(torch.float32)}, payload=PayloadKind.STATISTICS,
                       values={"options": dict(self.options), "round": self.round})

    @classmethod
    def from_message(cls, m: Message) -> "KnnLabelRequest":
        return cls(features=m.tensors["features"], options=dict(m.values["options"]), round=int(m.values["round"]))


@dataclass
class KnnLabelReply:
    """Client -> cloud: only the answered queries' positions and labels, with the spends."""

    answered: torch.Tensor  # int64 (A,), positions in the request
    labels: torch.Tensor  # int64 (A,)
    spends: tuple[PrivacySpend, ...] = ()

    def to_message(self) -> Message:
        return Message(KNN, tensors={"answered": self.answered.to(torch.int64), "labels": self.labels.to(torch.int64)},
                       payload=PayloadKind.LABELS, spends=self.spends)

    @classmethod
    def from_message(cls, m: Message) -> "KnnLabelReply":
        return cls(answered=m.tensors["answered"], labels=m.tensors["labels"], spends=m.spends)
