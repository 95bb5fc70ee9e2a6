"""Run a job (a protocol and its opaque description) on Flower's simulation or deployment engine.

Both launchers start a SuperLink on a free 127.0.0.1 port (``--insecure`` unless TLS files are
given, runtime dependency installation disabled, so the apps run in this Python environment),
submit the cotrain Flower app with ``flwr run`` (its ``FLWR_HOME`` is a folder under ``workdir``,
nothing touches the user's home), wait for the ServerApp's result files and stop every process of
the run on every exit path (success, error, timeout, Ctrl-C; see :mod:`.processes`). They return
what the in-process run returns: ``(history, ledger, final_state_dict)``, the history as the job's
JSON round records.

Every time limit is a parameter (:class:`Limits`); the defaults grow with the run's exchanges and
its participants (:meth:`Limits.resolved`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import tomli_w
import torch

from cotrain.runtime.flower.apps import DONE_FILE, ERROR_FILE, HISTORY_FILE, LEDGER_FILE, MODEL_FILE
from cotrain.runtime.flower.processes import FlowerLaunchError, ProcessGroup, tagged_processes
from cotrain.runtime.flower.security import Security
from cotrain.runtime.inprocess import InProcessGrid
from cotrain.runtime.job import load_job
from cotrain.runtime.ledger import Ledger
from cotrain.runtime.ports import free_port

RunResult = tuple[list[dict], Ledger, dict[str, torch.Tensor]]
CONNECTION = "cotrain"
__all__ = ["FlowerLaunchError", "FlowerTimeoutError", "Limits", "run_flower_deployment", "run_flower_simulation",
           "run_inprocess", "tagged_processes"]


class FlowerTimeoutError(FlowerLaunchError):
    """A time limit passed; ``limit`` names it (``"timeout_s"``)."""

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class Limits:
    """Seconds a Flower run may take: the whole run (start-up included), one exchange's replies,
    and the wait for the nodes to connect. None: the default of :meth:`resolved`."""

    timeout_s: float | None = None
    reply_timeout_s: float | None = None
    node_wait_s: float | None = None

    def resolved(self, *, exchanges: int, participants: int, simulation: bool) -> "Limits":
        """Defaults, from what was measured here (deployment about 7 s an exchange, a ClientApp
        process per message; simulation 0.1 s an exchange and a participant, 10 s of Ray start-up,
        both several times slower on a loaded machine) with ample room, ``k`` = 1 (simulation) or
        10 (deployment): the run ``300 + exchanges * (60 + k * participants)`` seconds; one
        exchange's replies ``300 + k * participants`` (the first one includes the nodes' start-up;
        a node that died is answered for by the SuperLink once it missed its heartbeats, about a
        minute, so a long wait costs little); the nodes ``60 + 2 * participants`` to connect."""
        k = 1.0 if simulation else 10.0
        return Limits(
            timeout_s=self.timeout_s if self.timeout_s is not None else
            300.0 + max(exchanges, 1) * (60.0 + k * participants),
            reply_timeout_s=self.reply_timeout_s if self.reply_timeout_s is not None else 300.0 + k * participants,
            node_wait_s=self.node_wait_s if self.node_wait_s is not None else 60.0 + 2.0 * participants)


class _Deadline:
    """The whole run's deadline; :meth:`left` raises :class:`FlowerTimeoutError` once it passed."""

    def __init__(self, seconds: float, log_dir: Path) -> None:
        self.seconds, self.log_dir = seconds, log_dir
        self._end = time.monotonic() + seconds

    def left(self, cap: float | None = None) -> float:
        rest = self._end - time.monotonic()
        if rest <= 0:
            raise FlowerTimeoutError(f"the Flower run did not finish within {self.seconds:g} s (timeout_s); "
                                     f"logs: {self.log_dir}", limit="timeout_s")
        return rest if cap is None else min(rest, cap)


def write_app(app_dir: Path, description: str, *, results_dir: Path, job: str,
              node_wait_s: float = 120.0, reply_timeout_s: float = 600.0) -> Path:
    """Write the Flower app project (a ``pyproject.toml`` naming cotrain's apps) with its run config."""
    app_dir.mkdir(parents=True, exist_ok=True)
    project = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {"name": "cotrain-flower-app", "version": "1.0.0", "license": "Apache-2.0",
                    "description": "cotrain protocols on Flower", "dependencies": []},
        "tool": {"flwr": {"app": {
            "publisher": "cotrain",
            "components": {"serverapp": "cotrain.runtime.flower.apps:server_app",
                           "clientapp": "cotrain.runtime.flower.apps:client_app"},
            "config": {"job-description": description, "results-dir": str(results_dir.resolve()),
                       "job": job, "node-wait-s": float(node_wait_s), "reply-timeout-s": float(reply_timeout_s),
                       "torch-threads": torch.get_num_threads()},
        }}},
    }
    (app_dir / "pyproject.toml").write_text(tomli_w.dumps(project), encoding="utf-8")
    return app_dir


def read_results(folder: Path) -> RunResult:
    """History, ledger and final model a ServerApp wrote to ``folder``."""
    history = json.loads((folder / HISTORY_FILE).read_text(encoding="utf-8"))
    ledger = Ledger.read_jsonl(folder / LEDGER_FILE)
    state = torch.load(folder / MODEL_FILE, weights_only=True)
    return history, ledger, dict(state)


def run_inprocess(description: str, *, job: str) -> RunResult:
    """The same job on the in-process runtime: the reference the Flower runs must equal."""
    j = load_job(job)
    n = j.num_participants(description)
    grid = InProcessGrid({j.participant_id(description, i): j.build_participant(description, i) for i in range(n)})
    result = j.serve(grid, description)
    return list(result.history), grid.ledger, result.state_dict


class Federation:
    """A SuperLink on a free 127.0.0.1 port, its SuperNodes and the ``flwr`` CLI connection to it,
    all in ``procs``; ``workdir`` receives ``flwr_home/`` (the CLI's private home)."""

    def __init__(self, procs: ProcessGroup, workdir: Path, *, simulation: bool = False,
                 security: Security = Security()) -> None:
        self.procs, self.simulation, self.security = procs, simulation, security
        self.port = free_port()
        self.env = procs.environment()
        self.env.update(FLWR_HOME=str((workdir / "flwr_home").resolve()), FLWR_TELEMETRY_ENABLED="0",
                        FLWR_DISABLE_UPDATE_CHECK="1", PYTHONUNBUFFERED="1")
        self.env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + self.env.get("PATH", "")
        home = Path(self.env["FLWR_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        config = {"superlink": {"default": CONNECTION,
                                CONNECTION: security.connection(f"127.0.0.1:{self.port}")}}
        (home / "config.toml").write_text(tomli_w.dumps(config), encoding="utf-8")

    def start_superlink(self, deadline: _Deadline) -> None:
        cmd = ["flower-superlink", *self.security.superlink_args(), "--disable-runtime-dependency-installation",
               "--host", "127.0.0.1", "--port", str(self.port)]
        if self.simulation:
            cmd.append("--simulation")
        self.procs.start("superlink", cmd, env=self.env)
        self.procs.wait_for_port("superlink", self.port, timeout_s=deadline.left(60.0))

    def register(self, public_key: Path, deadline: _Deadline) -> int:
        """Register a SuperNode's public key (authentication on); its node id."""
        name = f"register-{Path(public_key).stem}"
        out = self.procs.run_to_end(name, ["flwr", "supernode", "register", str(public_key), CONNECTION,
                                           "--format", "json"], env=self.env, timeout_s=deadline.left(120.0))
        return int(_json_answer(out, "flwr supernode register")["node-id"])

    def start_node(self, index: int, count: int, *, key: Path | None = None, cache_dir: Path | None = None,
                   name: str | None = None) -> str:
        """Start SuperNode ``index`` of ``count`` (signing with ``key``; ``cache_dir`` its node cache);
        its process name in ``procs``."""
        name = name or f"supernode-{index}"
        config = f"partition-id={index} num-partitions={count}"
        if cache_dir is not None:
            config += f' cache-dir="{Path(cache_dir).resolve()}"'
        self.procs.start(name, ["flower-supernode", *self.security.supernode_args(key), "--superlink",
                                f"127.0.0.1:{self.port}", "--node-config", config, "--host", "127.0.0.1",
                                "--port", str(free_port())], env=self.env)
        return name

    def submit(self, app_dir: Path, deadline: _Deadline, *, federation_config: Sequence[str] = ()) -> str:
        cmd = ["flwr", "run", str(app_dir), CONNECTION, "--format", "json"]
        for item in federation_config:
            cmd += ["--federation-config", item]
        payload = _json_answer(self.procs.run_to_end("flwr-run", cmd, env=self.env, timeout_s=deadline.left(120.0)),
                               "flwr run")
        if not payload.get("success"):
            raise FlowerLaunchError(f"`flwr run` failed: {payload}")
        return str(payload.get("run-id"))

    def run_status(self, run_id: str, deadline: _Deadline) -> str:
        """The SuperLink's status of ``run_id`` (``"running"``, ``"finished:failed"``, ...), or ``""``."""
        try:
            out = self.procs.run_to_end("flwr-ls", ["flwr", "ls", CONNECTION, "--run-id", run_id, "--format", "json"],
                                        env=self.env, timeout_s=deadline.left(60.0))
            runs = _json_answer(out, "flwr ls").get("runs", [])
        except FlowerTimeoutError:
            raise
        except FlowerLaunchError:
            return ""
        return str(runs[0].get("status", "")) if runs else ""

    def wait_for_results(self, run_id: str, results: Path, deadline: _Deadline, *, status_every_s: float = 15.0,
                         may_exit: Sequence[str] = ()) -> RunResult:
        """Wait for ``done.json``; fail fast on ``error.txt``, a dead process (but those in
        ``may_exit``) or a run the SuperLink ended."""
        next_status = time.monotonic() + status_every_s
        finished_seen, status = False, ""
        while True:
            if (results / ERROR_FILE).exists():
                text = (results / ERROR_FILE).read_text(encoding="utf-8")
                raise FlowerLaunchError(f"the ServerApp failed: {text.splitlines()[0] if text else '?'}; "
                                        f"traceback in {results / ERROR_FILE}, logs: {self.procs.log_dir}")
            if (results / DONE_FILE).exists():
                return read_results(results)
            if finished_seen:
                raise FlowerLaunchError(f"run {run_id} ended ({status}) without results; logs: {self.procs.log_dir}")
            self.procs.check_alive(except_names=may_exit)
            if time.monotonic() > next_status:
                status = self.run_status(run_id, deadline)
                finished_seen = status.startswith("finished")
                next_status = time.monotonic() + status_every_s
                continue
            time.sleep(min(0.2, deadline.left()))


def _json_answer(out: str, what: str) -> dict:
    try:
        return json.loads(out[out.index("{"):out.rindex("}") + 1])
    except ValueError as err:
        raise FlowerLaunchError(f"`{what}` gave no JSON answer: {out[-2000:]}") from err


def _launch(description: str, workdir: str | Path, *, job: str, num_participants: int, simulation: bool,
            limits: Limits, security: Security = Security(), cpus_per_client: int = 1,
            node_cache: bool = True) -> RunResult:
    workdir = Path(workdir)
    results = workdir / "results"
    for name in (DONE_FILE, ERROR_FILE):
        (results / name).unlink(missing_ok=True)
    n = num_participants
    security.check(None if simulation else n)
    j = load_job(job)
    lim = limits.resolved(exchanges=j.exchanges(description) if j.exchanges else 1, participants=n,
                          simulation=simulation)
    app_dir = write_app(workdir / "app", description, results_dir=results, job=job, node_wait_s=lim.node_wait_s,
                        reply_timeout_s=lim.reply_timeout_s)
    with _sigterm_unwinds(), ProcessGroup(workdir / "logs") as procs:
        deadline = _Deadline(float(lim.timeout_s), procs.log_dir)
        try:
            return _run(workdir, procs, deadline, n=n, simulation=simulation, security=security,
                        app_dir=app_dir, cpus_per_client=cpus_per_client, node_cache=node_cache)
        except FlowerLaunchError as err:
            if isinstance(err, FlowerTimeoutError):
                raise
            deadline.left()  # a step that gave up because the run's time was up: say so
            raise


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Where SIGTERM would end this process on the spot (its default action), make it unwind
    instead (``SystemExit(143)``), so the process group is stopped on the way out."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def unwind(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run(workdir: Path, procs: ProcessGroup, deadline: _Deadline, *, n: int, simulation: bool,
         security: Security, app_dir: Path, cpus_per_client: int, node_cache: bool) -> RunResult:
    federation = Federation(procs, workdir, simulation=simulation, security=security)
    federation.start_superlink(deadline)
    options, nodes = [], []
    if simulation:
        options = [f"num-supernodes={n}", f"client-resources-num-cpus={cpus_per_client}",
                   "client-resources-num-gpus=0.0"]
    else:
        for i in range(n):
            key = Path(security.node_keys[i]) if security.node_keys else None
            if key is not None:
                federation.register(security.public_key(key), deadline)
            cache = workdir / "node-cache" / f"node-{i}" if node_cache else None
            nodes.append(federation.start_node(i, n, key=key, cache_dir=cache))
    run_id = federation.submit(app_dir, deadline, federation_config=options)
    # a SuperNode that dies is a participant that fails (the grid records it), not a failed run
    return federation.wait_for_results(run_id, workdir / "results", deadline, may_exit=nodes)


def run_flower_simulation(description: str, *, job: str, num_participants: int, workdir: str | Path,
                          limits: Limits = Limits(), timeout_s: float | None = None,
                          cpus_per_client: int = 1) -> RunResult:
    """Run ``job`` on Flower's simulation engine: a SuperLink in simulation mode, Ray actors as nodes.

    ``description`` is handed unread to the job in every app process. ``workdir`` receives ``app/``
    (the Flower app), ``flwr_home/``, ``logs/`` and ``results/``. ``timeout_s`` overrides
    ``limits.timeout_s``.
    """
    limits = replace(limits, timeout_s=timeout_s) if timeout_s is not None else limits
    return _launch(description, workdir, job=job, num_participants=num_participants, limits=limits,
                   simulation=True, cpus_per_client=cpus_per_client)


def run_flower_deployment(description: str, *, job: str, num_participants: int, workdir: str | Path,
                          limits: Limits = Limits(), timeout_s: float | None = None,
                          security: Security = Security(), node_cache: bool = True) -> RunResult:
    """Run ``job`` on Flower's deployment engine: a SuperLink and one SuperNode process per participant,
    SuperNode ``i`` started with ``--node-config "partition-id=i num-partitions=N cache-dir=..."``
    (``node_cache=False``: no ``cache-dir``, every message rebuilds the participant's data).

    ``security``: TLS and node authentication (each node key registered before its node starts).
    ``workdir`` receives ``app/`` (the Flower app), ``flwr_home/``, ``logs/``, ``node-cache/`` and
    ``results/``. ``timeout_s`` overrides ``limits.timeout_s``.
    """
    limits = replace(limits, timeout_s=timeout_s) if timeout_s is not None else limits
    return _launch(description, workdir, job=job, num_participants=num_participants, limits=limits,
                   simulation=False, security=security, node_cache=node_cache)
