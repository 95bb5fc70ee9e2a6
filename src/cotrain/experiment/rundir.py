"""The run folder ``<output_dir>/<name>/``: one folder a run, never overwritten.

Files (see :class:`RunFolder` for their paths): the resolved ``config.toml``, ``metrics.jsonl``
(one line a round, appended as rounds finish), ``ledger.jsonl`` (one line a message),
``summary.json``, ``model.pt``, PNG plots and ``report.html``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

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
        self.summary.write_text(json.dumps(_clean(summary), indent=2, allow_nan=False) + "\n", encoding="utf-8")

    def read_summary(self) -> dict[str, Any]:
        return json.loads(self.summary.read_text(encoding="utf-8"))
