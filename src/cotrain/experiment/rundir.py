"""The run folder ``<output_dir>/<name>/``: one folder a run, never overwritten.

Files (see :class:`RunFolder` for their paths): the resolved ``config.toml``, ``metrics.jsonl``
(one line a round, appended as rounds finish), ``ledger.jsonl`` (one line a message),
``summary.json`` (``status``: ``running``, ``interrupted``, ``failed`` or ``complete``), ``model.pt``,
PNG plots, ``report.html``, and while the run is not complete ``checkpoint.pt`` (the state after
its last finished round, from which ``cotrain run --resume`` goes on).
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from cotrain.errors import ConfigError


def create_run_dir(output_dir: str | Path, name: str) -> Path:
    """Make ``output_dir/name``; if it exists, ``name-2``, ``name-3``, ... (never overwrites)."""
    base = Path(output_dir)
    if base.exists() and not base.is_dir():
        raise ConfigError(f"run.output_dir: {base} is a file, not a folder", key="run.output_dir")
    base.mkdir(parents=True, exist_ok=True)
    for i in range(1, 100_000):
        path = base / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"no free run folder name for {name!r} under {base}")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into a temporary file beside ``path``, flushed to disk, then renamed onto ``path``
    (a reader sees the old file or the new one, never half of one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _clean(value: Any) -> Any:
    """JSON-safe: NaN / infinity become None (JSON has neither); containers recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def to_json_line(record: dict[str, Any]) -> str:
    """One compact JSON line (strict JSON: no NaN)."""
    return json.dumps(_clean(record), allow_nan=False)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every line of a JSON-lines file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@dataclass(frozen=True)
class RunFolder:
    """Paths of one run's files, and the writers that fill them."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.toml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def ledger(self) -> Path:
        return self.path / "ledger.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def model(self) -> Path:
        return self.path / "model.pt"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    @property
    def checkpoint(self) -> Path:
        """The state after the last finished round (see :mod:`cotrain.experiment.checkpoint`)."""
        return self.path / "checkpoint.pt"

    def plot(self, name: str) -> Path:
        """``<name>.png`` in the folder."""
        return self.path / f"{name}.png"

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Add one round's line to ``metrics.jsonl`` (written at once: a stopped run keeps its rounds)."""
        with open(self.metrics, "a", encoding="utf-8") as f:
            f.write(to_json_line(record) + "\n")

    def write_metrics(self, records: Iterable[dict[str, Any]]) -> None:
        """Replace ``metrics.jsonl`` with ``records``."""
        with open(self.metrics, "w", encoding="utf-8") as f:
            for r in records:
                f.write(to_json_line(r) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Replace ``summary.json`` atomically (its ``status`` says whether the run is complete)."""
        text = json.dumps(_clean(summary), indent=2, allow_nan=False) + "\n"
        atomic_write(self.summary, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def read_summary(self) -> dict[str, Any]:
        return json.loads(self.summary.read_text(encoding="utf-8"))

    def status(self) -> str:
        """``summary.json``'s status; ``"unknown"`` for one cut short while written (not complete)."""
        try:
            return str(self.read_summary().get("status", "complete"))  # runs from before statuses were complete
        except ValueError:
            return "unknown"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``.lock`` (this process's id) while writing the folder, so that no second process (a
        ``--resume`` of a run still going) writes it at the same time; a stale lock is taken over."""
        path = self.path / ".lock"
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                holder = path.read_text(encoding="utf-8").strip()
                if holder.isdigit() and _alive(int(holder)):
                    raise ConfigError(f"run folder {self.path} is being written by process {holder} (if none is, "
                                      f"delete {path})", key="run_dir") from None
                path.unlink(missing_ok=True)
        else:
            raise ConfigError(f"run folder {self.path}: cannot take {path}", key="run_dir")
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        try:
            yield
        finally:
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
