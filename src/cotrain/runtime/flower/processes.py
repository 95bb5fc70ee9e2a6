"""The processes of one Flower run: started with logs, found again, and all ended on every exit path.

A run's processes are found three ways, because each alone misses some: every process the
launcher starts leads a session of its own, so its descendants share that session id (unless
they call ``setsid``); every descendant inherits the ``COTRAIN_FLOWER_TAG`` environment variable
(unless it rewrites its environment block, as ``setproctitle`` does for Ray's workers); and the
group notes every descendant it sees while it waits (a process whose parent died is reparented
and would escape the parent-child walk). :meth:`ProcessGroup.stop` signals the union of the three
and waits until none is left. Linux only (reads ``/proc``); elsewhere only the started processes
themselves are tracked.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from cotrain.errors import RunFailedError

TAG_VAR = "COTRAIN_FLOWER_TAG"
PIDS_FILE = "pids.json"


class FlowerLaunchError(RunFailedError):
    """The Flower run failed, or did not finish in time; the message names the log folder."""


@dataclass(frozen=True)
class ProcInfo:
    """What ``/proc/<pid>/stat`` says of a live process (``start``: its start time, so a reused pid
    is not taken for the process once seen)."""

    pid: int
    ppid: int
    session: int
    start: int
    tagged_with: str
    cpu_ticks: int = 0  # user + system time so far, in clock ticks


def process_table() -> dict[int, ProcInfo]:
    """Every live, non-zombie process but this one, by pid."""
    proc = Path("/proc")
    if not proc.is_dir():
        return {}
    table: dict[int, ProcInfo] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] in ("Z", "X"):
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            environ = b""
        prefix = f"{TAG_VAR}=".encode()
        tag = next((v[len(prefix):].decode(errors="replace") for v in environ.split(b"\0") if v.startswith(prefix)), "")
        table[int(entry.name)] = ProcInfo(pid=int(entry.name), ppid=int(fields[1]), session=int(fields[3]),
                                          start=int(fields[19]), tagged_with=tag,
                                          cpu_ticks=int(fields[11]) + int(fields[12]))
    return table


def _program(pid: int) -> str:
    """The program a process runs: the script's name for ``python script``, else the executable's."""
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return "?"
    if not argv:
        return "?"
    first = Path(argv[0]).name
    if first.startswith("python") and len(argv) > 1 and not argv[1].startswith("-"):
        return Path(argv[1]).name
    return first


def tagged_processes(prefix: str = "") -> list[int]:
    """Live processes whose ``COTRAIN_FLOWER_TAG`` starts with ``prefix`` (any tag when empty).

    A tag is ``"<launching pid>-<random hex>"``."""
    return sorted(p.pid for p in process_table().values() if p.tagged_with and p.tagged_with.startswith(prefix))


def session_members(sessions: Iterable[int]) -> list[int]:
    """Live processes in any of ``sessions`` (a started process's pid is its session's id)."""
    wanted = set(sessions)
    return sorted(p.pid for p in process_table().values() if p.session in wanted)


def run_processes(log_dir: Path) -> list[int]:
    """Live processes of the run whose logs are in ``log_dir``: its sessions' members and its tagged
    processes, read from the ``pids.json`` the group keeps there (for tests and for a user's check;
    it also names each started process's pid and, once the run ended, the CPU seconds its
    processes used)."""
    path = Path(log_dir) / PIDS_FILE
    if not path.exists():
        return []
    saved = json.loads(path.read_text(encoding="utf-8"))
    sessions, tag = set(saved["sessions"]), saved["tag"]
    return sorted(p.pid for p in process_table().values() if p.session in sessions or p.tagged_with == tag)


class ProcessGroup:
    """Processes started for one Flower run, with their logs; :meth:`stop` ends all of them."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.tag = f"{os.getpid()}-{uuid.uuid4().hex}"
        self._procs: dict[str, subprocess.Popen] = {}
        self._short: set[str] = set()
        self._seen: set[tuple[int, int]] = set()  # (pid, start time) of every descendant noticed
        self._cpu: dict[tuple[int, int], int] = {}  # the last CPU ticks read of each
        self._command: dict[tuple[int, int], str] = {}  # and its program's name
        self._watching: threading.Event | None = None
        self._lock = threading.Lock()  # the watcher thread and the launcher both look

    def __enter__(self) -> "ProcessGroup":
        """Also start looking at the group every ``watch_s`` seconds from a thread, so short-lived
        descendants (a ClientApp process per message) are noted even while the launcher blocks."""
        self._watching = threading.Event()
        threading.Thread(target=self._watch, name="cotrain-flower-watch", daemon=True).start()
        return self

    def _watch(self, watch_s: float = 0.25) -> None:
        while not self._watching.wait(watch_s):
            try:
                self.members()
            except Exception:  # noqa: BLE001 - a look that failed (a process vanished mid-read); the next one may not
                pass

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
        self._write_pids()
        return proc

    def pid(self, name: str) -> int:
        """The pid of the process started as ``name`` (it leads its own session and process group)."""
        return self._procs[name].pid

    def _sessions(self) -> list[int]:
        return [p.pid for p in list(self._procs.values())]

    def run_to_end(self, name: str, cmd: Sequence[str], *, env: dict[str, str], timeout_s: float) -> str:
        """Run ``cmd`` to its end; its output (also logged); raise if it fails or times out."""
        self._short.add(name)
        proc = self.start(name, cmd, env=env)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as err:
            raise FlowerLaunchError(f"`{' '.join(cmd[:2])}` did not finish in {timeout_s} s") from err
        out = self.log_text(name)
        if rc != 0:
            raise FlowerLaunchError(f"`{' '.join(cmd[:2])}` exited with {rc}: {out[-2000:]}")
        return out

    def log_text(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(encoding="utf-8", errors="replace")

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

    def check_alive(self, *, except_names: Iterable[str] = ()) -> None:
        """Raise if a long-running process of the group has exited; note the group's descendants."""
        self.members()
        skip = self._short | set(except_names)
        for name, proc in self._procs.items():
            if name not in skip and proc.poll() is not None:
                raise FlowerLaunchError(f"{name} exited with {proc.returncode}:\n{self.log_text(name)[-3000:]}")

    def members(self) -> list[int]:
        """Live processes of the group (see the module docstring), noting them for :meth:`stop`."""
        with self._lock:
            return self._members()

    def _members(self) -> list[int]:
        table = process_table()
        sessions = set(self._sessions())
        children: dict[int, list[int]] = {}
        for p in table.values():
            children.setdefault(p.ppid, []).append(p.pid)
        found = {pid for pid, p in table.items() if p.session in sessions or p.tagged_with == self.tag
                 or (pid, p.start) in self._seen}
        found |= {p.pid for p in list(self._procs.values()) if p.poll() is None}
        todo = list(found)
        while todo:  # descendants, whatever their session or environment
            for child in children.get(todo.pop(), []):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        for pid in found & set(table):
            key = (pid, table[pid].start)
            self._seen.add(key)
            self._cpu[key] = max(self._cpu.get(key, 0), table[pid].cpu_ticks)
            if key not in self._command:
                self._command[key] = _program(pid)
        return sorted(found)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the group's processes used, as last read while they ran: each
        process is read whenever the group looks (every check while the launcher waits), so the
        last fraction of a second of each process's life is missed."""
        with self._lock:
            return sum(self._cpu.values()) / os.sysconf("SC_CLK_TCK")

    def cpu_seconds_by_program(self) -> dict[str, float]:
        """:meth:`cpu_seconds` by program (``flwr-clientapp``, ``flower-supernode``, ...)."""
        tick = os.sysconf("SC_CLK_TCK")
        out: dict[str, float] = {}
        with self._lock:
            for key, ticks in self._cpu.items():
                name = self._command.get(key, "?")
                out[name] = out.get(name, 0.0) + ticks / tick
        return {k: round(v, 3) for k, v in sorted(out.items())}

    def _write_pids(self) -> None:
        with self._lock:
            processes = len(self._cpu)
            by_program = {}
            for name in self._command.values():
                by_program[name] = by_program.get(name, 0) + 1
        (self.log_dir / PIDS_FILE).write_text(json.dumps({
            "tag": self.tag, "sessions": self._sessions(), "names": {n: p.pid for n, p in self._procs.items()},
            "cpu_s": round(self.cpu_seconds(), 3), "cpu_s_by_program": self.cpu_seconds_by_program(),
            "processes": processes, "processes_by_program": dict(sorted(by_program.items()))}), encoding="utf-8")

    def _signal(self, sig: signal.Signals) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        for pid in self.members():
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def _wait_gone(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            for proc in self._procs.values():
                proc.poll()  # reap our own children, so they leave the table
            if not self.members():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM every member, SIGKILL what remains after ``grace_s``, and wait until none is left.

        The SIGKILL pass runs even when the wait is interrupted (a second Ctrl-C)."""
        if self._watching is not None:
            self._watching.set()
        self.members()  # a last look at the CPU each process used
        try:
            self._signal(signal.SIGTERM)
            if self._wait_gone(grace_s):
                return
        finally:
            self._signal(signal.SIGKILL)
            gone = self._wait_gone(10.0)
            self._write_pids()
        if not gone:
            raise FlowerLaunchError(f"processes {self.members()} survived SIGKILL; logs: {self.log_dir}")
