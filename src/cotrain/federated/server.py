"""FedAvg / FedSGD rounds on the server side, written against the :class:`~cotrain.runtime.Grid`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from cotrain.aggregation import Aggregate, Aggregator, Upload, build_aggregator
from cotrain.federated.records import TrainInstruction, TrainResult, load_model_state, model_state
from cotrain.models.blocks import BlockModel
from cotrain.runtime.grid import Grid
from cotrain.seeding import derive_seed, numpy_rng


@dataclass(frozen=True)
class FedAvgSettings:
    """How the server runs FedAvg.

    ``participants_per_round`` (a count) takes precedence over ``fraction`` when both are set.
    ``upload="gradient"`` makes it FedSGD: each sampled participant uploads the gradient of one
    mini-batch and the server steps the global model with ``server_lr`` times their weighted mean.
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

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
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

    def to_json(self) -> dict:
        return dict(self.__dict__)


Evaluator = Callable[[BlockModel], dict[str, float]]
Observer = Callable[[int, dict[str, TrainResult], BlockModel], None]


def sample_participants(ids: list[str], settings: FedAvgSettings, *, seed: int, round: int) -> list[str]:
    """The participants of ``round``: a seeded sample without replacement, sorted."""
    if not ids:
        raise RuntimeError("no participants are connected")
    k = settings.participants_per_round or max(1, math.ceil(settings.fraction * len(ids)))
    if k > len(ids):
        raise ValueError(f"{k} participants per round asked for, only {len(ids)} connected")
    rng = numpy_rng(seed, "sampling", round)
    return sorted(str(ids[i]) for i in rng.choice(len(ids), size=k, replace=False))


def run_fedavg(grid: Grid, model: BlockModel, settings: FedAvgSettings, *, seed: int,
               evaluate: Evaluator | None = None,
               on_round: Callable[[RoundRecord], None] | None = None,
               observers: list[Observer] | None = None, aggregator: Aggregator | None = None) -> list[RoundRecord]:
    """Run ``settings.rounds`` rounds; ``model`` holds the global model and is updated in place.

    ``aggregator`` (default: ``build_aggregator("fedavg")``) combines each round's uploads, weighted
    by example counts, with the global model of the round as the reference state (parameter
    uploads); its per-participant weights, scores and exclusions go into the round record, and any
    noised release it makes (server-side DP) onto the ledger.
    ``observers`` see each round's uploads as the server received them (the curious server of the
    gradient audit is one); they never see participants' data.
    """
    aggregator = aggregator if aggregator is not None else build_aggregator("fedavg")
    history: list[RoundRecord] = []
    for rnd in range(1, settings.rounds + 1):
        t0 = time.perf_counter()
        up0, down0 = grid.ledger.total_bytes(direction="up"), grid.ledger.total_bytes(direction="down")
        chosen = sample_participants(grid.participant_ids(), settings, seed=seed, round=rnd)
        instr = TrainInstruction(parameters=model_state(model), round=rnd, local_steps=settings.local_steps,
                                 batch_size=settings.batch_size, lr=settings.lr, momentum=settings.momentum,
                                 weight_decay=settings.weight_decay, upload=settings.upload)
        message = instr.to_message()
        replies = grid.send_and_receive({pid: message for pid in chosen}, round=rnd)
        results = {pid: TrainResult.from_message(replies[pid]) for pid in sorted(replies)}
        for observe in observers or []:
            observe(rnd, results, model)
        reference = instr.parameters if settings.upload == "parameters" else None
        uploads = [Upload(pid, r.tensors, weight=r.num_examples) for pid, r in results.items()]
        outcome: Aggregate = aggregator(uploads, round=rnd, reference=reference,
                                        seed=derive_seed(seed, "aggregation", rnd))
        for spend in getattr(outcome, "spends", ()):  # server-side noise (DP-FedAvg) is a release too
            grid.ledger.record_privacy(spend)
        merged = outcome.tensors
        if settings.upload == "parameters":
            load_model_state(model, merged)
        else:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p -= settings.server_lr * merged[name]
        metrics = evaluate(model) if evaluate is not None else {}
        record = RoundRecord(
            round=rnd, participants=chosen,
            test_accuracy=float(metrics.get("accuracy", float("nan"))),
            test_loss=float(metrics.get("loss", float("nan"))),
            seconds=time.perf_counter() - t0,
            bytes_up=grid.ledger.total_bytes(direction="up") - up0,
            bytes_down=grid.ledger.total_bytes(direction="down") - down0,
            participant_metrics={pid: {"num_examples": float(r.num_examples), "train_loss": r.train_loss, **r.metrics}
                                 for pid, r in results.items()},
            aggregation=outcome.to_json(),
        )
        history.append(record)
        if on_round is not None:
            on_round(record)
    return history
