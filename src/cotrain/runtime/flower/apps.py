"""The Flower ``ServerApp`` and ``ClientApp`` that run any cotrain job.

Both apps read the run config:

* ``job``: ``"module:attribute"`` of a :class:`~cotrain.runtime.job.FlowerJob`;
* ``job-description``: the job's description, handed to it unread (an experiment config as JSON,
  for the experiment layer's jobs);
* ``results-dir``: where the server writes ``history.json``, ``ledger.jsonl``, ``model.pt`` and,
  last, ``done.json`` (or ``error.txt`` when it fails);
* ``node-wait-s``, ``reply-timeout-s``: how long the server waits for nodes and for replies;
* ``torch-threads``: torch's intra-op thread count in every app process (0: leave as is). CPU
  kernels sum in an order that depends on it, so the launcher passes its own count, and a run
  gives the same numbers as the in-process run of the same process.

A node's participant index is its node config's ``partition-id``. The client rebuilds its
participant from the description for every message and keeps the participant's state
(``Participant.get_state()``) in Flower's ``context.state``, because the deployment engine starts a
fresh process per message. A node config's ``cache-dir`` is the node's disk cache
(:mod:`cotrain.runtime.nodecache`) while the participant is built, so the node loads and
partitions its data once, not per message; its ``data-dir`` is where that node keeps the data
set (overriding the config's ``data.data_dir``, a path on the server's machine).
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.app import Message as FlowerMessage
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid as FlowerGrid
from flwr.serverapp import ServerApp

from cotrain.runtime.flower.grid import HELLO, FlowerMessageGrid
from cotrain.runtime.flower.records import (META_KEY, STATE_KEY, message_to_record_dict, record_dict_to_message,
                                            record_to_state, state_to_record)
from cotrain.runtime.job import FlowerJob, ServerResult, load_job
from cotrain.runtime.nodecache import use_node_cache

STATE_META_KEY = STATE_KEY + ".meta"
HISTORY_FILE, LEDGER_FILE, MODEL_FILE, DONE_FILE, ERROR_FILE, ARTIFACTS_FILE = (
    "history.json", "ledger.jsonl", "model.pt", "done.json", "error.txt", "artifacts.json")


def _description_and_job(context: Context) -> tuple[str, FlowerJob]:
    rc = context.run_config
    threads = int(rc.get("torch-threads", 0))
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return str(rc["job-description"]), load_job(str(rc["job"]))


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
    description, job = _description_and_job(context)
    settings = {str(k): str(v) for k, v in context.node_config.items()}
    with use_node_cache(settings.get("cache-dir") or None, settings):
        participant = job.build_participant(description, index)
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
    (folder / ARTIFACTS_FILE).write_text(json.dumps(result.artifacts, allow_nan=True), encoding="utf-8")
    nodes = {pid: grid.node_id(pid) for pid in grid.participant_ids()}
    (folder / DONE_FILE).write_text(json.dumps({"nodes": nodes}), encoding="utf-8")


@server_app.main()
def server_main(grid: FlowerGrid, context: Context) -> None:
    """Run the job's server loop on the Flower grid and write its results."""
    rc = context.run_config
    folder = Path(str(rc["results-dir"]))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        description, job = _description_and_job(context)
        timeout = float(rc.get("reply-timeout-s", 600.0))
        fgrid = FlowerMessageGrid(grid, expected=job.num_participants(description), id_of=lambda i: job.participant_id(description, i),
                                  wait_s=float(rc.get("node-wait-s", 120.0)),
                                  reply_timeout_s=timeout if timeout > 0 else None)
        result = job.serve(fgrid, description)
        write_results(folder, result, fgrid)
    except BaseException as err:
        # first line: the one-line reason the launcher reports; then the traceback, for the logs
        summary = " ".join(f"{type(err).__name__}: {err}".split())
        (folder / ERROR_FILE).write_text(f"{summary}\n{traceback.format_exc()}", encoding="utf-8")
        raise
