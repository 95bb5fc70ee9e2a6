"""The ECOS protocol on the Grid: the cloud (server) and a client (:class:`EcosClient`).

Hong, Lyu, Zhou, Spranger, "Outsourcing Training without Uploading Data via Efficient
Collaborative Open-Source Sampling", NeurIPS 2022 (arXiv 2210.12575).

    round 0  down  offer(hash(phi))                 up  has_encoder
    round 1  down  phi's weights (only if needed)   up  ack
    round 2  down  centroids C (K, D), rule, eps    up  s~ = s + N(0, (z * Delta)^2 I_K)   (K,)
    cloud    select ``budget`` pool samples from s~ (:func:`~cotrain.sampling.selection.select_ecos`)

The client alone computes the noise (it owns the data); its spend rides on the reply and is on
the ledger, from which :class:`EcosResult` reads epsilon and the bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

from cotrain.data.base import ArrayDataset
from cotrain.errors import ConfigError
from cotrain.runtime.grid import Grid, Participant, handler
from cotrain.runtime.message import Message
from cotrain.runtime.spend import PrivacySpend
from cotrain.sampling import records as R
from cotrain.sampling.compress import Compression
from cotrain.sampling.coverage import build_rule
from cotrain.sampling.encoder import ConvEncoder, EncoderConfig, encode, encoder_from_state, encoder_hash, encoder_state
from cotrain.sampling.selection import Allocation, select_ecos
from cotrain.seeding import torch_generator


@dataclass
class EcosSettings:
    """Every ECOS option, with its default (the ``[ecos]`` config section maps onto this).

    ``epsilon = math.inf`` releases exact scores (no noise, no spend); ``noise_multiplier`` set
    takes precedence over ``epsilon``. ``encoder``: ``"denoising"`` (trained on the pool),
    ``"random"`` (untrained), or the path of a file saved by ``save_encoder``.
    """

    budget: int = 1000
    k: int = 100
    rule: str = "nearest"
    rule_options: dict = field(default_factory=dict)
    epsilon: float = 1.0
    delta: float = 1e-5
    noise_multiplier: float | None = None
    threshold: float = 0.0
    temperature: float | None = None
    candidate_factor: float = 2.0
    encoder: str = "denoising"
    encoder_dim: int = 64
    encoder_width: int = 32
    encoder_steps: int = 1000
    kmeans_niter: int = 25

    def __post_init__(self) -> None:
        if self.budget < 1 or self.k < 1:
            raise ConfigError(f"ecos: budget and k must be >= 1, got {self.budget}, {self.k}", key="ecos")
        if not (self.epsilon > 0 and 0 < self.delta < 1):
            raise ConfigError(f"ecos: need epsilon > 0 and 0 < delta < 1, got {self.epsilon}, {self.delta}",
                              key="ecos.epsilon")
        build_rule(self.rule, **self.rule_options)  # unknown rule or option: fail at construction


class EcosClient(Participant):
    """The data owner: scores the cloud's centroids with its private data; evaluates models.

    ``exact_scores`` (the scores before noise) stays here: the benchmark reads it in process for
    the report, no message carries it.
    """

    def __init__(self, participant_id: str, data: ArrayDataset, *, seed: int, test: ArrayDataset | None = None,
                 encoder: ConvEncoder | None = None) -> None:
        super().__init__(participant_id)
        self.data, self.test, self.seed = data, test, seed
        self.encoder = encoder
        self.exact_scores: np.ndarray | None = None

    @handler(R.OFFER)
    def on_offer(self, message: Message) -> Message:
        offer = R.EncoderOffer.from_message(message)
        held = self.encoder is not None and encoder_hash(self.encoder) == offer.encoder_hash
        return R.EncoderOffer(encoder_hash=offer.encoder_hash, has_encoder=held).to_message()

    @handler(R.ENCODER)
    def on_encoder(self, message: Message) -> Message:
        t = R.EncoderTransfer.from_message(message)
        if encoder_hash(t.encoder) != t.encoder_hash:
            raise ValueError("received encoder does not match its announced hash")
        self.encoder = t.encoder
        return Message(R.ENCODER, values={"ok": True})

    @handler(R.COVERAGE)
    def on_coverage(self, message: Message) -> Message:
        req = R.CoverageRequest.from_message(message)
        if self.encoder is None or encoder_hash(self.encoder) != req.encoder_hash:
            raise ValueError("coverage request for an encoder this client does not hold")
        rule = build_rule(req.rule, **req.rule_options)
        centroids = req.centroids.numpy()
        exact = rule.counts(encode(self.encoder, self.data.x), centroids)
        self.exact_scores = exact
        sensitivity = rule.sensitivity(centroids.shape[0])
        value = torch.as_tensor(exact, dtype=torch.float64)
        spends: list[PrivacySpend] = []
        if req.noised:
            from cotrain.privacy import gaussian_mechanism, noise_multiplier_for

            z = req.noise_multiplier if req.noise_multiplier is not None else \
                noise_multiplier_for(epsilon=req.epsilon, delta=req.delta, compositions=1)
            value = gaussian_mechanism(
                value, sensitivity=sensitivity, noise_multiplier=z,
                generator=torch_generator(self.seed, "ecos", "coverage_noise", self.participant_id),
                party=self.participant_id, round=req.round, record=spends.append,
                release="coverage_scores")
        return R.CoverageReply(scores=value, sensitivity=sensitivity, spends=tuple(spends)).to_message()

    @handler(R.KNN)
    def on_knn_label(self, message: Message) -> Message:
        """Downstream (c): label the cloud's selection with private kNN on this client's labelled data."""
        from cotrain.sampling.private_knn import private_knn_labels

        if self.encoder is None:
            raise ValueError("private-kNN request before the client holds an encoder")
        req = R.KnnLabelRequest.from_message(message)
        spends: list[PrivacySpend] = []
        out = private_knn_labels(
            req.features, torch.from_numpy(encode(self.encoder, self.data.x)), self.data.y,
            num_classes=self.data.num_classes, **req.options,
            generator=torch_generator(self.seed, "ecos", "private_knn", self.participant_id, req.round),
            party=self.participant_id, round=req.round, record=spends.append)
        answered = torch.nonzero(out.answered).flatten()
        return R.KnnLabelReply(answered=answered, labels=out.labels[answered], spends=tuple(spends)).to_message()

    @handler(R.EVALUATE)
    def on_evaluate(self, message: Message) -> Message:
        from cotrain.models import build_model

        if self.test is None:
            raise ValueError(f"client {self.participant_id!r} holds no test split")
        req = R.EvaluateRequest.from_message(message)
        model = build_model(req.model, input_shape=self.test.input_shape, num_classes=self.test.num_classes,
                            **req.options)
        model.load_state_dict(req.parameters)
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(self.test.x[i:i + 512]).argmax(1) for i in range(0, len(self.test), 512)])
        acc = float((pred == self.test.y).float().mean())
        return R.EvaluateReply(accuracy=acc, num_examples=len(self.test)).to_message()

    def get_state(self) -> dict[str, torch.Tensor]:
        if self.encoder is None:
            return {}
        c = self.encoder.config
        return {**encoder_state(self.encoder),
                "encoder_config": torch.tensor([c.in_channels, c.image_size, c.width, c.dim])}

    def set_state(self, state: Mapping[str, torch.Tensor]) -> None:
        if "encoder_config" in state:
            c = [int(v) for v in state["encoder_config"]]
            self.encoder = encoder_from_state(EncoderConfig(*c), dict(state))


@dataclass
class CloudIndex:
    """What the cloud prepared (steps 1): phi, phi(pool) (N, D) and its K-means."""

    encoder: ConvEncoder
    features: np.ndarray
    compression: Compression

    @property
    def encoder_hash(self) -> str:
        return encoder_hash(self.encoder)


@dataclass
class EcosResult:
    """The selection and what it cost.

    Attributes:
        indices: selected pool indices (budget,).
        noisy_scores: the released scores (K,) (exact ones when epsilon = inf).
        allocation: per-cluster budget.
        epsilon: from the accountant on the ledger's spends of the client (inf with no noise).
        bytes_encoder / bytes_centroids / bytes_scores: tensor bytes on the ledger by message kind.
        bytes_values: JSON value bytes of the ECOS messages (hash, rule, flags), both ways.
    """

    indices: np.ndarray
    noisy_scores: np.ndarray
    allocation: Allocation
    epsilon: float
    delta: float
    bytes_encoder: int
    bytes_centroids: int
    bytes_scores: int
    bytes_values: int
    spends: tuple[PrivacySpend, ...] = ()


def share_encoder(grid: Grid, encoder: ConvEncoder, *, client: str, round: int) -> str:
    """Rounds ``round`` and ``round + 1``: offer phi's hash; send phi only if the client lacks it."""
    h = encoder_hash(encoder)
    reply = grid.send_and_receive({client: R.EncoderOffer(encoder_hash=h).to_message()}, round=round)
    if not R.EncoderOffer.from_message(reply[client]).has_encoder:
        grid.send_and_receive({client: R.EncoderTransfer(encoder, h).to_message()}, round=round + 1)
    return h


def run_ecos(grid: Grid, cloud: CloudIndex, settings: EcosSettings, *, client: str, round_start: int = 0) -> EcosResult:
    """Run rounds ``round_start .. round_start + 2`` of the protocol with ``client``; select."""
    first, first_spend = len(grid.ledger.entries), len(grid.ledger.privacy)
    h = share_encoder(grid, cloud.encoder, client=client, round=round_start)
    request = R.CoverageRequest(centroids=torch.from_numpy(cloud.compression.centroids), encoder_hash=h,
                                rule=settings.rule, rule_options=settings.rule_options, epsilon=settings.epsilon,
                                delta=settings.delta, noise_multiplier=settings.noise_multiplier,
                                round=round_start + 2).to_message()
    answer = R.CoverageReply.from_message(grid.send_and_receive({client: request}, round=round_start + 2)[client])
    scores = answer.scores.numpy().astype(np.float64)
    if scores.shape != (cloud.compression.k,):
        raise ValueError(f"client {client!r} sent scores of shape {tuple(scores.shape)}, expected ({cloud.compression.k},)")
    indices, alloc = select_ecos(cloud.features, cloud.compression.assignment, scores, settings.budget,
                                 threshold=settings.threshold, temperature=settings.temperature,
                                 centroids=cloud.compression.centroids, candidate_factor=settings.candidate_factor)
    entries = grid.ledger.entries[first:]
    spends = tuple(s for s in grid.ledger.privacy[first_spend:] if s.party == client)
    epsilon = math.inf
    if spends:  # this run's releases, as the ledger recorded them
        from cotrain.privacy import epsilon_of

        epsilon = float(epsilon_of(list(spends), delta=settings.delta))
    return EcosResult(
        indices=indices, noisy_scores=scores, allocation=alloc, epsilon=epsilon, delta=settings.delta,
        bytes_encoder=sum(e.bytes for e in entries if e.kind == R.ENCODER),
        bytes_centroids=sum(e.bytes for e in entries if e.kind == R.COVERAGE and e.direction == "down"),
        bytes_scores=sum(e.bytes for e in entries if e.kind == R.COVERAGE and e.direction == "up"),
        bytes_values=sum(e.value_bytes for e in entries), spends=spends)


def label_with_private_knn(grid: Grid, features: np.ndarray, *, client: str, options: dict, round: int,
                           delta: float = 1e-5) -> tuple[np.ndarray, np.ndarray, float]:
    """Downstream (c): the client labels the rows of ``features`` (Q, D); returns (answered positions,
    their labels, epsilon of this labelling from the ledger's spends)."""
    first_spend = len(grid.ledger.privacy)
    req = R.KnnLabelRequest(features=torch.from_numpy(np.ascontiguousarray(features)), options=options, round=round)
    reply = R.KnnLabelReply.from_message(grid.send_and_receive({client: req.to_message()}, round=round)[client])
    spends = [s for s in grid.ledger.privacy[first_spend:] if s.party == client]
    from cotrain.privacy import epsilon_of

    eps = float(epsilon_of(spends, delta=delta, accountant="rdp")) if spends else 0.0
    return reply.answered.numpy(), reply.labels.numpy(), eps


def evaluate_at_client(grid: Grid, model: torch.nn.Module, *, client: str, model_name: str, options: dict,
                       round: int) -> float:
    """Send ``model`` down; the client replies with its test accuracy only."""
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    reply = grid.send_and_receive({client: R.EvaluateRequest(params, model_name, options).to_message()}, round=round)
    return R.EvaluateReply.from_message(reply[client]).accuracy
