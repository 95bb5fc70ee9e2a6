"""The ``fedavg`` method: FedAvg / FedSGD on the in-process runtime or on Flower.

Preparing loads and partitions the data, builds the initial model and (in process) the
participants, so an unknown option or a missing file fails before anything trains. The server
scores the global model on the test split after each round; that split stays with the experiment.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from cotrain.data.base import ArrayDataset
from cotrain.experiment.audit_hook import audit_observers, finish_audit
from cotrain.experiment.config import ExperimentConfig
from cotrain.experiment.errors import ConfigError
from cotrain.experiment.methods import Method, MethodOutcome, RunContext, RoundJSON, register_method
from cotrain.experiment.setup import (ExperimentData, build_fedavg_participant, build_global_model,
                                      load_experiment_data, participant_id)
from cotrain.federated import FedAvgSettings, RoundRecord, evaluate, model_state, run_fedavg
from cotrain.runtime import InProcessGrid, Ledger

T = TypeVar("T")


DATA_ERROR_KEYS = {"partitioner": "data.partition_options", "participants": "data.participants",
                   "data set": "data.options"}
"""Which config key a data-loading error is about, by a word its message holds."""
_DATA_KEYS = DATA_ERROR_KEYS  # older name, kept for callers


def under_key(key: str, build: Callable[[], T], *, by_topic: dict[str, str] | None = None) -> T:
    """Run ``build``; a ``ValueError`` / ``TypeError`` it raises becomes a :class:`ConfigError`
    naming ``key`` (or ``by_topic[word]`` for the first word the message mentions). Data-set-not-found
    errors pass through: they name the path looked at already."""
    from cotrain.data.registry import DatasetNotFoundError

    try:
        return build()
    except (DatasetNotFoundError, ConfigError):
        raise
    except (ValueError, TypeError, KeyError) as exc:
        text = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
        key = next((k for word, k in (by_topic or {}).items() if word in text), key)
        prefix = key.split(".")[0] + ": "
        text = text[len(prefix):] if text.startswith(prefix) else text  # "audit: ..." under audit.enabled
        raise ConfigError(f"{key}: {text}", key=key) from exc


def _check_data_options(cfg: ExperimentConfig) -> None:
    from cotrain.data.registry import check_options, get_spec

    check_options(get_spec(cfg.data.dataset).loader, dict(cfg.data.options), f"data set {cfg.data.dataset!r}")


def prepare_data(cfg: ExperimentConfig) -> ExperimentData:
    """Load and partition ``[data]``; a bad option or an empty participant is a :class:`ConfigError`
    naming its key, missing files a ``DatasetNotFoundError`` naming the path."""
    under_key("data.options", lambda: _check_data_options(cfg))
    data: ExperimentData = under_key("data", lambda: load_experiment_data(cfg), by_topic=DATA_ERROR_KEYS)
    for i, part in enumerate(data.parts):
        if len(part) == 0:
            raise ConfigError(f"data.participants: participant {i} got no training samples "
                              f"({len(data.splits.train)} samples across {cfg.data.participants}); "
                              "use fewer participants or more data", key="data.participants")
    return data


def require_flower(runtime: str) -> None:
    """:class:`ConfigError` on ``run.runtime`` when Flower is not installed."""
    import importlib.util

    if importlib.util.find_spec("flwr") is None:
        raise ConfigError(f"run.runtime: {runtime!r} needs Flower, which is not installed "
                          "(pip install 'cotrain[flower]'); or use runtime = \"inprocess\"", key="run.runtime")


def record_json(record: RoundRecord | dict[str, Any]) -> RoundJSON:
    """A round record (a :class:`RoundRecord` or a dict from another runtime) as JSON-ready data."""
    d = record.to_json() if isinstance(record, RoundRecord) else dict(record)
    d["participants"] = list(d.get("participants", []))
    return d


@register_method("fedavg")
class FedAvg(Method):
    """FedAvg (McMahan et al., 2017) of ``[model]`` over ``[data] participants`` owners."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        f = cfg.fedavg
        self.settings = under_key("fedavg", lambda: FedAvgSettings(**f.model_dump()))
        if cfg.run.runtime != "inprocess":
            require_flower(cfg.run.runtime)
        self.data = prepare_data(cfg)
        self.model = under_key("model.options", lambda: build_global_model(cfg, self.data))
        self.participants = ({participant_id(i): build_fedavg_participant(cfg, i, self.data)
                              for i in range(len(self.data.parts))}
                             if cfg.run.runtime == "inprocess" else {})
        if cfg.audit.enabled and cfg.run.runtime != "inprocess":
            raise ConfigError("audit.enabled: the gradient audit runs on the in-process runtime "
                              "(set run.runtime = \"inprocess\")", key="audit.enabled")
        # the curious server's observers: built now, so a FedAvg (not FedSGD) run with an audit fails early
        self.observers = under_key("audit.enabled", lambda: audit_observers(cfg, self.participants, self.data.splits.test))

    @property
    def total_rounds(self) -> int:
        return self.cfg.fedavg.rounds

    def partition_view(self) -> tuple[ArrayDataset, list[np.ndarray]]:
        return self.data.splits.train, self.data.parts

    def _evaluate(self, model: Any) -> dict[str, float]:
        return evaluate(model, self.data.splits.test)

    def run(self, ctx: RunContext) -> MethodOutcome:
        runtime = self.cfg.run.runtime
        audit_summary: dict[str, Any] = {}
        if runtime == "inprocess":
            grid = InProcessGrid(self.participants)
            observers = self.observers
            history = run_fedavg(grid, self.model, self.settings, seed=self.cfg.run.seed, evaluate=self._evaluate,
                                 on_round=lambda r: ctx.on_round(record_json(r)), observers=observers)
            records = [record_json(r) for r in history]
            ledger, state = grid.ledger, model_state(self.model)
            audit_summary = finish_audit(ctx, observers)
        else:
            records, ledger, state = self._run_flower(ctx.run_dir / "flower")
            for r in records:
                ctx.on_round(r)
        return MethodOutcome(history=records, ledger=ledger, model_state=state,
                             summary={"upload": self.cfg.fedavg.upload, "aggregator": self.cfg.fedavg.aggregator,
                                      **audit_summary},
                             participant_rows=self.participant_rows(records))

    def _run_flower(self, workdir: Path) -> tuple[list[RoundJSON], Ledger, dict]:
        workdir.mkdir(parents=True, exist_ok=True)
        if self.cfg.run.runtime == "flower-simulation":
            from cotrain.runtime.flower.launch import run_flower_simulation

            history, ledger, state = run_flower_simulation(self.cfg, workdir=workdir)
        else:
            from cotrain.runtime.flower.launch import run_flower_deployment

            history, ledger, state = run_flower_deployment(self.cfg, workdir=workdir, timeout_s=self.cfg.run.timeout_s)
        return [record_json(r) for r in history], ledger, dict(state)

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
            rows.append({"participant": pid, "train_samples": int(len(part)), "classes": len(counts),
                         "largest_class_share": round(max(counts.values()) / max(len(part), 1), 3) if counts else 0.0,
                         "rounds": len(taken), "last_train_loss": last.get("train_loss")})
        return rows
