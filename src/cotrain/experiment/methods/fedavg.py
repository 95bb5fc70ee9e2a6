"""The ``fedavg`` method: FedAvg / FedSGD in process, on the parallel runtime or on Flower.

Preparing loads and partitions the data, builds the initial model and (in process) the
participants, so an unknown option or a missing file fails before anything trains. The server
scores the global model on the test split after each round; that split stays with the experiment.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Literal, Mapping

import numpy as np
from pydantic import Field

from cotrain.data.base import ArrayDataset
from cotrain.errors import ConfigError
from cotrain.experiment.crosscutting.aggregation import run_aggregator, server_root
from cotrain.experiment.crosscutting.faults import faulty_participants
from cotrain.experiment.crosscutting.audit import (audit_observers, finish_audit, observers_from_json,
                                                  observers_to_json, replayed_audit_observers)
from cotrain.experiment.method import Method, MethodOutcome, RunContext, RoundJSON, register_method
from cotrain.experiment.prepare import check_model_options, prepare_data, require_runtime, server_data, under_key
from cotrain.experiment.records import round_json
from cotrain.experiment.section import Section
from cotrain.experiment.setup import (build_fedavg_participant, build_global_model, fedavg_factory, participant_id,
                                      run_behaviours)
from cotrain.federated import FedAvgSettings, evaluate, model_state, run_fedavg
from cotrain.runtime import InProcessGrid
from cotrain.experiment.flower import config_job
from cotrain.experiment.parallel import GridParticipants, parallel_grid
from cotrain.runtime.job import ServerResult

if TYPE_CHECKING:
    from cotrain.experiment.config import ExperimentConfig
    from cotrain.runtime.grid import Grid, Participant

_DEFAULTS = FedAvgSettings()


class FedAvgSection(Section):
    """``[fedavg]``: FedAvg (``upload = "parameters"``) or FedSGD (``upload = "gradient"``); the
    defaults are :class:`~cotrain.federated.FedAvgSettings`' (defined once, there)."""

    rounds: int = Field(_DEFAULTS.rounds, ge=1)
    fraction: float = Field(_DEFAULTS.fraction, gt=0, le=1)
    participants_per_round: int | None = Field(_DEFAULTS.participants_per_round, ge=1)
    local_steps: int = Field(_DEFAULTS.local_steps, ge=1)
    batch_size: int = Field(_DEFAULTS.batch_size, ge=1)
    lr: float = Field(_DEFAULTS.lr, gt=0)
    momentum: float = Field(_DEFAULTS.momentum, ge=0, lt=1)
    weight_decay: float = Field(_DEFAULTS.weight_decay, ge=0)
    upload: Literal["parameters", "gradient"] = _DEFAULTS.upload
    server_lr: float = Field(_DEFAULTS.server_lr, gt=0)
    max_examples: int | None = Field(_DEFAULTS.max_examples, ge=1, description="cap on an upload's example count")
    max_update_norm: float | None = Field(_DEFAULTS.max_update_norm, gt=0, description="reject larger updates")
    min_participants: int = Field(_DEFAULTS.min_participants, ge=1, description="usable uploads a round needs")
    round_retries: int = Field(_DEFAULTS.round_retries, ge=0, description="re-send a round below quorum to a fresh "
                               "sample up to this many times")
    round_timeout_s: float | None = Field(_DEFAULTS.round_timeout_s, gt=0, description="a reply later than this "
                                          "(seconds) is a failure (in-process runtime)")
    eval_every: int = Field(_DEFAULTS.eval_every, ge=1, description="score the global model every k rounds")

    def settings(self) -> FedAvgSettings:
        return FedAvgSettings(**{f.name: getattr(self, f.name) for f in fields(FedAvgSettings)})

    def check_fits(self, cfg: "ExperimentConfig") -> None:
        if self.round_timeout_s is not None and cfg.method.name == "fedavg" and cfg.run.runtime != "inprocess":
            raise ConfigError(f"fedavg.round_timeout_s: enforced on the inprocess runtime only (on {cfg.run.runtime} "
                              "the time limit is run.timeout_s)", key="fedavg.round_timeout_s")
        asked = self.participants_per_round or max(1, math.ceil(self.fraction * cfg.data.participants))
        if cfg.method.name == "fedavg" and self.min_participants > asked:
            raise ConfigError(f"fedavg.min_participants: {self.min_participants} is more than the {asked} participants "
                              "asked each round; no round could reach it", key="fedavg.min_participants")


def serve_fedavg(grid: "Grid", cfg: "ExperimentConfig") -> ServerResult:
    """The FedAvg server of an experiment, on any grid: global model, rule, test-split evaluation."""
    data = prepare_data(cfg)
    model = build_global_model(cfg, data)
    observers = replayed_audit_observers(cfg, data, server_data(data))  # the curious server, where it runs
    aggregator = run_aggregator(cfg)
    root, scored = server_root(cfg, aggregator, data)
    history = run_fedavg(grid, model, cfg.fedavg.settings(), seed=cfg.run.seed, aggregator=aggregator,
                         evaluate=lambda m: evaluate(m, scored), observers=observers, root=root)
    return ServerResult([round_json(r) for r in history], model_state(model), observers_to_json(observers))


def fedavg_participant(cfg: "ExperimentConfig", index: int) -> "Participant":
    return build_fedavg_participant(cfg, index)


FLOWER_JOB = config_job(serve=serve_fedavg, build_participant=fedavg_participant,
                        num_participants=lambda cfg: cfg.data.participants,
                        participant_id=lambda cfg, i: participant_id(i), exchanges=lambda cfg: cfg.fedavg.rounds)


@register_method("fedavg", section=FedAvgSection, uses=("aggregation", "attack", "defence", "audit", "faults"))
class FedAvg(Method):
    """FedAvg (McMahan et al., 2017) of ``[model]`` over ``[data] participants`` owners."""

    flower_job = "cotrain.experiment.methods.fedavg:FLOWER_JOB"

    def __init__(self, cfg: "ExperimentConfig") -> None:
        super().__init__(cfg)
        self.settings = under_key("fedavg", cfg.fedavg.settings)
        require_runtime(cfg, ("inprocess", "parallel", "flower-simulation", "flower-deployment"), "")
        self.data = prepare_data(cfg)
        check_model_options(cfg)
        self.model = under_key("model.options", lambda: build_global_model(cfg, self.data))
        self.behaviours = run_behaviours(cfg, len(self.data.parts))
        self.aggregator = run_aggregator(cfg)
        self.root, self.scored = server_root(cfg, self.aggregator, self.data)
        ids = [participant_id(i) for i in range(len(self.data.parts))]
        self.participants: Mapping[str, Participant] = {}
        if cfg.run.runtime == "inprocess":
            self.participants = faulty_participants(cfg, {pid: build_fedavg_participant(cfg, i, self.data, self.behaviours)
                                                          for i, pid in enumerate(ids)})
        elif cfg.run.runtime == "parallel":  # built in the workers, and here only to score an audit
            self.participants = GridParticipants(ids)
        # the curious server's observers: built now, so a FedAvg (not FedSGD) run with an audit fails early
        self.observers = under_key("audit.enabled", lambda: audit_observers(cfg, self.participants, self.data.splits.test))

    @property
    def total_rounds(self) -> int:
        return self.cfg.fedavg.rounds

    @property
    def resumable(self) -> bool:
        return self.cfg.run.runtime == "inprocess"

    @property
    def test_samples(self) -> int:
        return len(self.scored)

    def partition_view(self) -> tuple[ArrayDataset, list[np.ndarray]]:
        return self.data.splits.train, self.data.parts

    def _evaluate(self, model: Any) -> dict[str, float]:
        return evaluate(model, self.scored)

    def run(self, ctx: RunContext) -> MethodOutcome:
        runtime = self.cfg.run.runtime
        audit_summary: dict[str, Any] = {}
        if runtime in ("inprocess", "parallel"):
            grid = self._grid()
            observers = self.observers
            try:
                history = run_fedavg(grid, self.model, self.settings, seed=self.cfg.run.seed,
                                     evaluate=self._evaluate, on_round=lambda r: ctx.on_round(round_json(r)),
                                     observers=observers, aggregator=self.aggregator, root=self.root,
                                     checkpoint=ctx.round_hook(ledger=grid.ledger, participants=self.participants))
            finally:
                getattr(grid, "close", lambda: None)()
            records = [round_json(r) for r in history]
            ledger, state = grid.ledger, model_state(self.model)
            audit_summary = finish_audit(ctx, observers)
        else:
            records, ledger, state, artifacts = self.run_on_flower(ctx)
            audit_summary = finish_audit(ctx, observers_from_json(self.cfg, artifacts))
        return MethodOutcome(history=records, ledger=ledger, model_state=state,
                             summary={"upload": self.cfg.fedavg.upload, "aggregator": self.cfg.aggregation.name,
                                      "malicious": list(self.behaviours.malicious), **audit_summary},
                             participant_rows=self.participant_rows(records))

    def _grid(self) -> "Grid":
        if self.cfg.run.runtime == "inprocess":
            return InProcessGrid(dict(self.participants))
        ids = list(self.participants)
        grid = parallel_grid(self.cfg, fedavg_factory(self.cfg, self.data, self.behaviours), ids,
                             work={pid: len(part) for pid, part in zip(ids, self.data.parts)})
        self.participants.grid = grid  # type: ignore[attr-defined]
        return grid

    def participant_rows(self, records: list[RoundJSON]) -> list[dict[str, Any]]:
        """Per participant: samples, classes held, rounds taken part in, last training loss."""
        train = self.data.splits.train
        labels = train.y.numpy()
        rows = []
        for i, part in enumerate(self.data.parts):
            pid = participant_id(i)
            taken = [r for r in records if pid in r.get("participants", [])]
            last = taken[-1]["participant_metrics"].get(pid, {}) if taken else {}
            counts = Counter(int(c) for c in labels[part])
            rows.append({"participant": pid, "malicious": pid in self.behaviours.malicious,
                         "train_samples": int(len(part)), "classes": len(counts),
                         "largest_class_share": round(max(counts.values()) / max(len(part), 1), 3) if counts else 0.0,
                         "rounds": len(taken), "last_train_loss": last.get("train_loss")})
        return rows
