"""The Flower ``ServerApp`` and ``ClientApp`` that run cotrain protocols.

Both apps read the run config:

* ``experiment``: the :class:`~cotrain.experiment.config.ExperimentConfig` as JSON;
* ``results-dir``: where the server writes ``history.json``, ``ledger.jsonl``, ``model.pt`` and,
  last, ``done.json`` (or ``error.txt`` when it fails);
* ``job``: ``"module:attribute"`` of a :class:`FlowerJob` (default: :data:`FEDAVG_JOB`);
* ``node-wait-s``, ``reply-timeout-s``: how long the server waits for nodes and for replies;
* ``torch-threads``: torch's intra-op thread count in every app process (0: leave as is). CPU
  kernels sum in an order that depends on it, so the launcher passes its own count, and a run
  gives the same numbers as the in-process run of the same process.

A node's participant index is its node config's ``partition-id``. The client rebuilds its
participant from the experiment config for every message and keeps the participant's state
(``Participant.get_state()``) in Flower's ``context.state``, because the deployment engine starts a
fresh process per message.
"""

from __future__ import annotations

import importlib
import json
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.app import Message as FlowerMessage
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid as FlowerGrid
from flwr.serverapp import ServerApp

from cotrain.experiment.config import ExperimentConfig
from cotrain.runtime.flower.grid import HELLO, FlowerMessageGrid
from cotrain.runtime.flower.records import (META_KEY, STATE_KEY, message_to_record_dict, record_dict_to_message,
                                            record_to_state, state_to_record)
from cotrain.runtime.grid import Grid, Participant

DEFAULT_JOB = "cotrain.runtime.flower.apps:FEDAVG_JOB"
STATE_META_KEY = STATE_KEY + ".meta"
HISTORY_FILE, LEDGER_FILE, MODEL_FILE, DONE_FILE, ERROR_FILE = (
    "history.json", "ledger.jsonl", "model.pt", "done.json", "error.txt")


@dataclass
class ServerResult:
    """What a job's server side hands back: per-round records (JSON-ready) and the final model."""

    history: list[dict[str, Any]]
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class FlowerJob:
    """A protocol as the Flower apps run it: its server loop and how a participant is built."""

    serve: Callable[[Grid, ExperimentConfig], ServerResult]
    build_participant: Callable[[ExperimentConfig, int], Participant]
    num_participants: Callable[[ExperimentConfig], int]
    participant_id: Callable[[int], str]


# -- FedAvg, the default job -------------------------------------------------------------
def serve_fedavg(grid: Grid, cfg: ExperimentConfig) -> ServerResult:
    """FedAvg server of an experiment config: the global model, ``run_fedavg``, test-split evaluation."""
    from cotrain.experiment.setup import build_global_model, load_experiment_data
    from cotrain.federated import FedAvgSettings, evaluate, model_state, run_fedavg

    data = load_experiment_data(cfg)
    model = build_global_model(cfg, data)
    settings = FedAvgSettings(**cfg.fedavg.model_dump())
    history = run_fedavg(grid, model, settings, seed=cfg.run.seed,
                         evaluate=lambda m: evaluate(m, data.splits.test))
    return ServerResult([r.to_json() for r in history], model_state(model))


def _build_fedavg_participant(cfg: ExperimentConfig, index: int) -> Participant:
    from cotrain.experiment.setup import build_fedavg_participant

    return build_fedavg_participant(cfg, index)


def _participant_id(index: int) -> str:
    from cotrain.experiment.setup import participant_id

    return participant_id(index)


FEDAVG_JOB = FlowerJob(serve=serve_fedavg, build_participant=_build_fedavg_participant,
                       num_participants=lambda cfg: cfg.data.participants, participant_id=_participant_id)


# -- run config --------------------------------------------------------------------------
def load_job(ref: str) -> FlowerJob:
    """The :class:`FlowerJob` named ``"module:attribute"``."""
    module, _, attr = ref.partition(":")
    job = getattr(importlib.import_module(module), attr)
    if not isinstance(job, FlowerJob):
        raise TypeError(f"{ref} is {type(job).__name__}, not a FlowerJob")
    return job


def _config_and_job(context: Context) -> tuple[ExperimentConfig, FlowerJob]:
    rc = context.run_config
    threads = int(rc.get("torch-threads", 0))
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return (ExperimentConfig.model_validate_json(str(rc["experiment"])),
            load_job(str(rc.get("job", DEFAULT_JOB))))


# -- ClientApp ---------------------------------------------------------------------------
client_app = ClientApp()


def _partition_id(context: Context) -> int:
    if "partition-id" not in context.node_config:
        raise KeyError(f"node config has no 'partition-id' (keys: {sorted(context.node_config)}); start the "
                       "SuperNode with --node-config \"partition-id=I num-partitions=N\"")
    return int(context.node_config["partition-id"])


def handle_message(message: FlowerMessage, context: Context) -> FlowerMessage:
    """Answer a Flower message with the cotrain participant's handler for its kind."""
    index = _partition_id(context)
    if str(message.content[META_KEY]["kind"]) == HELLO:
        return FlowerMessage(RecordDict({META_KEY: ConfigRecord({"kind": HELLO, "index": index})}),
                             reply_to=message)
    cfg, job = _config_and_job(context)
    participant = job.build_participant(cfg, index)
    if STATE_KEY in context.state:
        participant.set_state(record_to_state(context.state[STATE_KEY], context.state[STATE_META_KEY]))
    reply = participant.handle(record_dict_to_message(message.content))
    arrays, meta = state_to_record(participant.get_state())
    context.state[STATE_KEY] = arrays
    context.state[STATE_META_KEY] = meta
    return FlowerMessage(message_to_record_dict(reply), reply_to=message)


client_app.train()(handle_message)
client_app.evaluate()(handle_message)
client_app.query()(handle_message)


# -- ServerApp ---------------------------------------------------------------------------
server_app = ServerApp()


def write_results(folder: Path, result: ServerResult, grid: FlowerMessageGrid) -> None:
    """Write the run's files; ``done.json`` last, so its presence means the others are complete."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / HISTORY_FILE).write_text(json.dumps(result.history, allow_nan=True), encoding="utf-8")
    grid.ledger.write_jsonl(folder / LEDGER_FILE)
    torch.save(result.state_dict, folder / MODEL_FILE)
    nodes = {pid: grid.node_id(pid) for pid in grid.participant_ids()}
    (folder / DONE_FILE).write_text(json.dumps({"nodes": nodes}), encoding="utf-8")


@server_app.main()
def server_main(grid: FlowerGrid, context: Context) -> None:
    """Run the job's server loop on the Flower grid and write its results."""
    rc = context.run_config
    folder = Path(str(rc["results-dir"]))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        cfg, job = _config_and_job(context)
        timeout = float(rc.get("reply-timeout-s", 600.0))
        fgrid = FlowerMessageGrid(grid, expected=job.num_participants(cfg), id_of=job.participant_id,
                                  wait_s=float(rc.get("node-wait-s", 120.0)),
                                  reply_timeout_s=timeout if timeout > 0 else None)
        result = job.serve(fgrid, cfg)
        write_results(folder, result, fgrid)
    except BaseException:
        (folder / ERROR_FILE).write_text(traceback.format_exc(), encoding="utf-8")
        raise
