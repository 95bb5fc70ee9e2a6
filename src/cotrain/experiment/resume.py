"""``cotrain run --resume RUN_DIR``: go on from the last checkpoint of a stopped run.

The run is rebuilt from the config saved in its folder (the same seed builds the same data,
models and participants), its state after the last checkpointed round is put back, the lines of
``metrics.jsonl`` and ``ledger.jsonl`` written after that checkpoint are cut off, and training goes
on in the same folder. At the same thread count the result is the uninterrupted run's, bit for
bit: model, round records (but their timings) and ledger.
"""

from __future__ import annotations

import time
from pathlib import Path

from cotrain.errors import ConfigError
from cotrain.experiment.checkpoint import RunCheckpoint, keep_lines
from cotrain.experiment.config import ExperimentConfig, load_config
from cotrain.experiment.method import Method
from cotrain.experiment.rundir import RunFolder
from cotrain.experiment.runner import Progress, RunResult, prepare, train


def resume_config(run_dir: str | Path) -> ExperimentConfig:
    """The saved config of a run that can be resumed; a one-line :class:`ConfigError` (key ``resume``)
    for a folder that is not a run, is complete, or has no checkpoint."""
    folder = RunFolder(Path(run_dir))
    _check(folder)
    return load_config(folder.config)


def _check(folder: RunFolder) -> None:
    if not folder.path.is_dir():
        raise ConfigError(f"resume: {folder.path} is not a folder", key="resume")
    if not folder.config.is_file():
        raise ConfigError(f"resume: {folder.path} is not a run folder (no config.toml)", key="resume")
    if folder.summary.is_file() and folder.status() == "complete":
        raise ConfigError(f"resume: {folder.path} is a complete run; nothing to resume", key="resume")
    if not folder.checkpoint.is_file():
        raise ConfigError(f"resume: {folder.path} has no checkpoint (it stopped before its first round ended, or "
                          "its method and runtime keep none); run it again", key="resume")


def resume_experiment(run_dir: str | Path, *, progress: Progress | None = None,
                      stop_after_round: int | None = None) -> RunResult:
    """Resume the run in ``run_dir`` from its last checkpoint and finish it there."""
    t0 = time.perf_counter()
    method = prepare(resume_config(run_dir))
    return resume_prepared(method, run_dir, progress=progress, t0=t0, stop_after_round=stop_after_round)


def resume_prepared(method: Method, run_dir: str | Path, *, progress: Progress | None = None,
                    t0: float | None = None, stop_after_round: int | None = None) -> RunResult:
    """:func:`resume_experiment` for a method already built from ``resume_config(run_dir)``."""
    t0 = time.perf_counter() if t0 is None else t0
    folder = RunFolder(Path(run_dir))
    if not method.resumable:
        raise ConfigError(f"resume: the {method.cfg.method.name} method on {method.cfg.run.runtime} keeps no "
                          "checkpoint; run it again", key="resume")
    with folder.lock():
        _check(folder)  # again, now that no other process writes the folder
        checkpoint = RunCheckpoint.load(folder, total_rounds=method.total_rounds, stop_after_round=stop_after_round)
        keep_lines(folder.metrics, checkpoint.metrics_lines)
        keep_lines(folder.ledger, checkpoint.ledger_lines)
        checkpoint.extra["resumed_after"] = [*checkpoint.extra.get("resumed_after", []), checkpoint.metrics_lines]
        return train(method, folder, checkpoint, progress=progress, t0=t0)
