"""``[attack] clean_run``: the same experiment's finished run with no attack, to measure an attack against.

An attacked run names the folder of a clean run; its report then draws the clean run's accuracy
per round beside its own and ``summary.json`` gains ``clean_final_test_accuracy`` and
``accuracy_drop_vs_clean`` (clean minus attacked, in accuracy units). The clean run may use another
aggregation rule, defence or runtime (the robust-aggregation question is "rule R under attack
against plain FedAvg with none"), but not other data, model, method settings or seed: those
would make the gap mean nothing, so they are a one-line :class:`ConfigError` naming the keys
that differ, raised before anything trains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotrain.errors import ConfigError

if TYPE_CHECKING:
    from cotrain.experiment.config import ExperimentConfig

KEY = "attack.clean_run"


@dataclass(frozen=True)
class CleanRun:
    """A finished clean run: its folder and its round records (as in its ``metrics.jsonl``)."""

    path: Path
    history: list[dict[str, Any]]

    @property
    def final_test_accuracy(self) -> float | None:
        return self.history[-1].get("test_accuracy") if self.history else None


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def compared_keys(cfg: "ExperimentConfig") -> dict[str, Any]:
    """The settings a clean run must share: ``[data]``, ``[model]``, ``[method]``, the method's own
    section and ``run.seed``, flattened to dotted keys."""
    dump = cfg.model_dump()
    sections = ("data", "model", "method", cfg.method.name)
    flat = _flat({s: dump[s] for s in sections if s in dump})
    flat["run.seed"] = cfg.run.seed
    return flat


def load_clean_run(cfg: "ExperimentConfig") -> CleanRun | None:
    """The clean run ``cfg.attack.clean_run`` names (None when unset), checked against ``cfg``."""
    from cotrain.experiment.config import load_config
    from cotrain.experiment.rundir import RunFolder

    where = cfg.attack.clean_run
    if where is None:
        return None
    folder = RunFolder(Path(where))
    if not folder.config.is_file() or not folder.summary.is_file():
        raise ConfigError(f"{KEY}: {folder.path} is not a run folder (no config.toml / summary.json)", key=KEY)
    status = folder.status()
    if status != "complete":
        raise ConfigError(f"{KEY}: {folder.path} is not a complete run (status {status})", key=KEY)
    summary = folder.read_summary()
    other = load_config(folder.config)
    if other.attack.name is not None and summary.get("malicious", True):  # fraction 0: nobody attacked
        raise ConfigError(f"{KEY}: {folder.path} is not a clean run (it ran attack {other.attack.name!r} on "
                          f"{summary.get('malicious')})", key=KEY)
    mine, theirs = compared_keys(cfg), compared_keys(other)
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if differ:
        raise ConfigError(f"{KEY}: {folder.path} is another experiment; it differs in {', '.join(differ)}", key=KEY)
    lines = folder.metrics.read_text(encoding="utf-8").splitlines() if folder.metrics.is_file() else []
    return CleanRun(folder.path, [json.loads(line) for line in lines if line.strip()])


def clean_summary(clean: CleanRun | None, final_test_accuracy: float | None) -> dict[str, Any]:
    """The summary keys of an attacked run measured against ``clean`` (none without one)."""
    if clean is None:
        return {}
    base = clean.final_test_accuracy
    drop = None if base is None or final_test_accuracy is None else round(base - final_test_accuracy, 6)
    return {"clean_run": str(clean.path), "clean_final_test_accuracy": base, "accuracy_drop_vs_clean": drop}
