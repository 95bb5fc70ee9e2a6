"""FedAvg / FedSGD rounds on the server side, written against the :class:`~cotrain.runtime.Grid`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from cotrain.aggregation import Aggregate, Aggregator, Upload, build_aggregator
from cotrain.federated.checkpoint import NO_CHECKPOINT, RoundHook
from cotrain.federated.quorum import QuorumError, UploadsRejectedError, gather, sample_participants
from cotrain.federated.records import TrainInstruction, TrainResult, load_model_state, model_state
from cotrain.models.blocks import BlockModel
from cotrain.runtime.grid import Grid, Participant
from cotrain.seeding import derive_seed

__all__ = ["FedAvgSettings", "QuorumError", "RoundRecord", "UploadsRejectedError", "run_fedavg", "sample_participants"]


@dataclass(frozen=True)
class FedAvgSettings:
    """How the server runs FedAvg.

    ``participants_per_round`` (a count) takes precedence over ``fraction`` when both are set.
    ``upload="gradient"`` makes it FedSGD: each sampled participant uploads the gradient of one
    mini-batch and the server steps the global model with ``server_lr`` times their weighted mean.
    ``max_examples`` caps the example count an upload may claim (its weight); ``max_update_norm``
    bounds the L2 norm of an update (FedSGD: of the gradient). Uploads beyond them, or malformed
    (see :mod:`cotrain.federated.validation`), are rejected, not aggregated. A participant that
    fails (its handler raises, its node dies, or its reply takes longer than ``round_timeout_s``
    seconds) drops out of the round; a round with fewer than ``min_participants`` usable uploads is
    re-sent to a fresh sample up to ``round_retries`` times, then stops the run with a
    :class:`QuorumError` (see :mod:`cotrain.federated.quorum`).
    ``eval_every``: the server scores the global model every k rounds and after the last (NaN between).
    """

    rounds: int = 10
    fraction: float = 1.0
    participants_per_round: int | None = None
    local_steps: int = 10
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    upload: str = "parameters"
    server_lr: float = 1.0
    max_examples: int | None = None
    max_update_norm: float | None = None
    min_participants: int = 1
    round_retries: int = 0
    round_timeout_s: float | None = None
    eval_every: int = 1

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.min_participants < 1:
            raise ValueError(f"min_participants must be >= 1, got {self.min_participants}")
        if self.round_retries < 0:
            raise ValueError(f"round_retries must be >= 0, got {self.round_retries}")
        if self.round_timeout_s is not None and not self.round_timeout_s > 0:
            raise ValueError(f"round_timeout_s must be > 0, got {self.round_timeout_s}")
        if self.upload not in ("parameters", "gradient"):
            raise ValueError(f"upload must be 'parameters' or 'gradient', got {self.upload!r}")


@dataclass
class RoundRecord:
    """What one round produced, as the server saw it."""

    round: int
    participants: list[str]
    test_accuracy: float
    test_loss: float
    seconds: float
    bytes_up: int
    bytes_down: int
    participant_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    aggregation: dict = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    retries: list[dict] = field(default_factory=list)  # earlier attempts below quorum: participants, failed, rejected

    def to_json(self) -> dict:
        return dict(self.__dict__)


Evaluator = Callable[[BlockModel], dict[str, float]]
Observer = Callable[[int, dict[str, TrainResult], BlockModel], None]


def run_fedavg(grid: Grid, model: BlockModel, settings: FedAvgSettings, *, seed: int,
               evaluate: Evaluator | None = None,
               on_round: Callable[[RoundRecord], None] | None = None,
               observers: list[Observer] | None = None, aggregator: Aggregator | None = None,
               root: Participant | None = None, checkpoint: RoundHook = NO_CHECKPOINT) -> list[RoundRecord]:
    """Run ``settings.rounds`` rounds; ``model`` holds the global model and is updated in place.

    ``aggregator`` (default: ``build_aggregator("fedavg")``) combines each round's uploads, weighted
    by example counts, with the global model of the round as the reference state (parameter
    uploads); its per-participant weights, scores and exclusions go into the round record, and any
    noised release it makes (server-side DP) onto the ledger.
    ``observers`` see each round's uploads as the server received them (the curious server of the
    gradient audit is one); they never see participants' data. ``root`` is the server's own
    participant on its clean root set (FLTrust): when the rule needs a server upload, the server
    answers the round's instruction itself, off the grid (nothing crosses, nothing is on the ledger).
    ``checkpoint`` is told each finished round's state, and gives it back to resume a stopped run.
    """
    aggregator = aggregator if aggregator is not None else build_aggregator("fedavg")
    parts = {"model": model, "aggregator": aggregator, "observers": list(observers or []), "root": root}
    saved = checkpoint.resume(parts)
    history: list[RoundRecord] = [RoundRecord(**r) for r in saved["history"]] if saved else []
    for rnd in range(len(history) + 1, settings.rounds + 1):
        t0 = time.perf_counter()
        up0, down0 = grid.ledger.total_bytes(direction="up"), grid.ledger.total_bytes(direction="down")
        instr = TrainInstruction(parameters=model_state(model), round=rnd, local_steps=settings.local_steps,
                                 batch_size=settings.batch_size, lr=settings.lr, momentum=settings.momentum,
                                 weight_decay=settings.weight_decay, upload=settings.upload)
        message = instr.to_message()
        attempt, earlier = gather(grid, message, instr.parameters, settings, seed=seed, round=rnd)
        results = {pid: TrainResult.from_message(m) for pid, m in attempt.accepted.items()}
        for observe in observers or []:
            observe(rnd, results, model)
        reference = instr.parameters if settings.upload == "parameters" else None
        uploads = [Upload(pid, r.tensors, weight=r.num_examples) for pid, r in results.items()]
        server_upload = None
        if getattr(aggregator, "needs_server_upload", False):
            if root is None:
                raise ValueError(f"aggregator {aggregator.name!r} needs the server's own upload: give run_fedavg a root")
            server_upload = TrainResult.from_message(root.handle(message.detached())).tensors
        outcome: Aggregate = aggregator(uploads, round=rnd, reference=reference,
                                        seed=derive_seed(seed, "aggregation", rnd), server_upload=server_upload)
        for spend in outcome.spends:  # server-side noise (DP-FedAvg) is a release too
            grid.ledger.record_privacy(spend)
        merged = outcome.tensors
        if settings.upload == "parameters":
            load_model_state(model, merged)
        else:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p -= settings.server_lr * merged[name]
        scored = rnd % settings.eval_every == 0 or rnd == settings.rounds  # the last round is always scored
        metrics = evaluate(model) if evaluate is not None and scored else {}
        record = RoundRecord(
            round=rnd, participants=attempt.participants,
            test_accuracy=float(metrics.get("accuracy", float("nan"))),
            test_loss=float(metrics.get("loss", float("nan"))),
            seconds=time.perf_counter() - t0,
            bytes_up=grid.ledger.total_bytes(direction="up") - up0,
            bytes_down=grid.ledger.total_bytes(direction="down") - down0,
            participant_metrics={pid: {"num_examples": float(r.num_examples), "train_loss": r.train_loss, **r.metrics}
                                 for pid, r in results.items()},
            aggregation=outcome.to_json(),
            rejected=attempt.rejected,
            failed=attempt.failed,
            retries=[a.to_json() for a in earlier],
        )
        history.append(record)
        if on_round is not None:
            on_round(record)
        checkpoint.round_done(rnd, parts, lambda: {"history": [r.to_json() for r in history]})
    return history
