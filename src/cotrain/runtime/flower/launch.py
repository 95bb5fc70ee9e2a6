"""Run a job (a protocol and its opaque description) on Flower's simulation or deployment engine.

Both launchers start a SuperLink on a free 127.0.0.1 port (``--insecure``, runtime dependency
installation disabled, so the apps run in this Python environment), submit the cotrain Flower app
with ``flwr run`` (its ``FLWR_HOME`` is a folder under ``workdir``, nothing touches the user's
home), wait for the ServerApp's result files and stop every process they started, also on error
or timeout. They return what the in-process run returns: ``(history, ledger, final_state_dict)``, the history
as the job's JSON round records.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Sequence

import tomli_w
import torch

from cotrain.errors import RunFailedError
from cotrain.runtime.flower.apps import DONE_FILE, ERROR_FILE, HISTORY_FILE, LEDGER_FILE, MODEL_FILE
from cotrain.runtime.inprocess import InProcessGrid
from cotrain.runtime.job import load_job
from cotrain.runtime.ledger import Ledger
from cotrain.runtime.ports import free_port

RunResult = tuple[list[dict], Ledger, dict[str, torch.Tensor]]
CONNECTION = "cotrain"


class FlowerLaunchError(RunFailedError):
    """The Flower run failed, or did not finish in time; the message names the log folder."""


# -- processes ---------------------------------------------------------------------------
TAG_VAR = "COTRAIN_FLOWER_TAG"


def tagged_processes(prefix: str = "") -> list[int]:
    """Live processes whose ``COTRAIN_FLOWER_TAG`` starts with ``prefix`` (any tag when empty).

    Every process a launcher starts, and everything those start, inherits the tag, so the sweep
    finds them even after they detached into sessions of their own. A tag is
    ``"<launching pid>-<random hex>"``. Linux only (reads ``/proc``); elsewhere it finds nothing.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    needle = f"{TAG_VAR}={prefix}".encode()
    found: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(v.startswith(needle) for v in environ.split(b"\0")):
            found.append(int(entry.name))
    return sorted(found)


class ProcessGroup:
    """Processes started for one Flower run, with their logs; :meth:`stop` ends all of them."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.tag = f"{os.getpid()}-{uuid.uuid4().hex}"
        self._procs: dict[str, subprocess.Popen] = {}
        self._short: set[str] = set()

    def __enter__(self) -> "ProcessGroup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def environment(self) -> dict[str, str]:
        """This process's environment plus the group's tag."""
        return {**os.environ, TAG_VAR: self.tag}

    def start(self, name: str, cmd: Sequence[str], *, env: dict[str, str]) -> subprocess.Popen:
        """Start ``cmd`` in a session of its own, output to ``<log_dir>/<name>.log``."""
        with open(self.log_dir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(list(cmd), env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self._procs[name] = proc
        return proc

    def run_to_end(self, name: str, cmd: Sequence[str], *, env: dict[str, str], timeout_s: float) -> str:
        """Run ``cmd`` to its end; its output (also logged); raise if it fails or times out."""
        self._short.add(name)
        proc = self.start(name, cmd, env=env)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as err:
            raise FlowerLaunchError(f"`{' '.join(cmd[:2])}` did not finish in {timeout_s} s") from err
        out = (self.log_dir / f"{name}.log").read_text(encoding="utf-8", errors="replace")
        if rc != 0:
            raise FlowerLaunchError(f"`{' '.join(cmd[:2])}` exited with {rc}: {out[-2000:]}")
        return out

    def wait_for_port(self, name: str, port: int, *, timeout_s: float) -> None:
        """Wait until 127.0.0.1:``port`` accepts connections, while ``name`` stays alive."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise FlowerLaunchError(f"{name} did not open port {port} within {timeout_s} s; logs: {self.log_dir}")

    def check_alive(self) -> None:
        """Raise if a long-running process of the group has exited."""
        for name, proc in self._procs.items():
            if name not in self._short and proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(encoding="utf-8", errors="replace")[-3000:]
                raise FlowerLaunchError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM every process group started and every tagged process; SIGKILL what remains."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in self._procs.values():
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass
            for pid in tagged_processes(self.tag):
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                for proc in self._procs.values():
                    proc.poll()
                if all(p.returncode is not None for p in self._procs.values()) and not tagged_processes(self.tag):
                    return
                time.sleep(0.1)
        left = tagged_processes(self.tag)
        if left:
            raise FlowerLaunchError(f"processes {left} survived SIGKILL")


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


def write_flwr_home(home: Path, superlink_port: int) -> Path:
    """A private ``FLWR_HOME`` whose default SuperLink connection is ours."""
    home.mkdir(parents=True, exist_ok=True)
    config = {"superlink": {"default": CONNECTION,
                            CONNECTION: {"address": f"127.0.0.1:{superlink_port}", "insecure": True}}}
    (home / "config.toml").write_text(tomli_w.dumps(config), encoding="utf-8")
    return home


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


def _base_env(workdir: Path, procs: ProcessGroup) -> dict[str, str]:
    env = procs.environment()
    env["FLWR_HOME"] = str((workdir / "flwr_home").resolve())
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def _start_superlink(procs: ProcessGroup, env: dict[str, str], port: int, *, simulation: bool) -> None:
    cmd = ["flower-superlink", "--insecure", "--disable-runtime-dependency-installation",
           "--host", "127.0.0.1", "--port", str(port)]
    if simulation:
        cmd.append("--simulation")
    procs.start("superlink", cmd, env=env)
    procs.wait_for_port("superlink", port, timeout_s=60.0)


def _submit(procs: ProcessGroup, env: dict[str, str], app_dir: Path, *,
            federation_config: Sequence[str] = ()) -> str:
    cmd = ["flwr", "run", str(app_dir), CONNECTION, "--format", "json"]
    for item in federation_config:
        cmd += ["--federation-config", item]
    out = procs.run_to_end("flwr-run", cmd, env=env, timeout_s=120.0)
    try:
        start = out.index("{")
        payload = json.loads(out[start:out.rindex("}") + 1])
    except ValueError as err:
        raise FlowerLaunchError(f"`flwr run` gave no JSON answer: {out[-2000:]}") from err
    if not payload.get("success"):
        raise FlowerLaunchError(f"`flwr run` failed: {payload}")
    return str(payload.get("run-id"))


def _run_status(procs: ProcessGroup, env: dict[str, str], run_id: str) -> str:
    """The SuperLink's status of ``run_id`` (``"running"``, ``"finished:failed"``, ...), or ``""``."""
    try:
        out = procs.run_to_end("flwr-ls", ["flwr", "ls", CONNECTION, "--run-id", run_id, "--format", "json"],
                               env=env, timeout_s=60.0)
        runs = json.loads(out[out.index("{"):out.rindex("}") + 1]).get("runs", [])
    except (FlowerLaunchError, ValueError):
        return ""
    return str(runs[0].get("status", "")) if runs else ""


def _wait_for_results(procs: ProcessGroup, env: dict[str, str], run_id: str, results: Path,
                      timeout_s: float, status_every_s: float = 15.0) -> RunResult:
    """Wait for ``done.json``; fail fast on ``error.txt``, a dead process or a run the SuperLink ended."""
    deadline = time.monotonic() + timeout_s
    next_status = time.monotonic() + status_every_s
    finished_seen, status = False, ""
    while time.monotonic() < deadline:
        if (results / ERROR_FILE).exists():
            raise FlowerLaunchError(f"the ServerApp failed:\n{(results / ERROR_FILE).read_text(encoding='utf-8')}"
                                    f"\nlogs: {procs.log_dir}")
        if (results / DONE_FILE).exists():
            return read_results(results)
        if finished_seen:
            raise FlowerLaunchError(f"run {run_id} ended ({status}) without results; logs: {procs.log_dir}")
        procs.check_alive()
        if time.monotonic() > next_status:
            status = _run_status(procs, env, run_id)
            finished_seen = status.startswith("finished")
            next_status = time.monotonic() + status_every_s
            continue
        time.sleep(0.2)
    raise FlowerLaunchError(f"no results in {results} after {timeout_s} s; logs: {procs.log_dir}")


def _launch(description: str, workdir: str | Path, *, job: str, num_participants: int, timeout_s: float,
            simulation: bool, cpus_per_client: int = 1) -> RunResult:
    workdir = Path(workdir)
    results = workdir / "results"
    for name in (DONE_FILE, ERROR_FILE):
        (results / name).unlink(missing_ok=True)
    app_dir = write_app(workdir / "app", description, results_dir=results, job=job, node_wait_s=timeout_s,
                        reply_timeout_s=timeout_s)
    n = num_participants
    with ProcessGroup(workdir / "logs") as procs:
        env = _base_env(workdir, procs)
        port = free_port()
        write_flwr_home(Path(env["FLWR_HOME"]), port)
        _start_superlink(procs, env, port, simulation=simulation)
        if simulation:
            federation = [f"num-supernodes={n}", f"client-resources-num-cpus={cpus_per_client}",
                          "client-resources-num-gpus=0.0"]
        else:
            federation = []
            for i in range(n):
                procs.start(f"supernode-{i}", [
                    "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{port}",
                    "--node-config", f"partition-id={i} num-partitions={n}",
                    "--host", "127.0.0.1", "--port", str(free_port())], env=env)
        run_id = _submit(procs, env, app_dir, federation_config=federation)
        return _wait_for_results(procs, env, run_id, results, timeout_s)


def run_flower_simulation(description: str, *, job: str, num_participants: int, workdir: str | Path,
                          timeout_s: float = 600.0, cpus_per_client: int = 1) -> RunResult:
    """Run ``job`` on Flower's simulation engine: a SuperLink in simulation mode, Ray actors as nodes.

    ``description`` is handed unread to the job in every app process. ``workdir`` receives ``app/``
    (the Flower app), ``flwr_home/``, ``logs/`` and ``results/``.
    """
    return _launch(description, workdir, job=job, num_participants=num_participants, timeout_s=timeout_s,
                   simulation=True, cpus_per_client=cpus_per_client)


def run_flower_deployment(description: str, *, job: str, num_participants: int, workdir: str | Path,
                          timeout_s: float = 600.0) -> RunResult:
    """Run ``job`` on Flower's deployment engine: a SuperLink and one SuperNode process per participant,
    SuperNode ``i`` started with ``--node-config "partition-id=i num-partitions=N"``.

    ``workdir`` receives ``app/`` (the Flower app), ``flwr_home/``, ``logs/`` and ``results/``.
    """
    return _launch(description, workdir, job=job, num_participants=num_participants, timeout_s=timeout_s,
                   simulation=False)
