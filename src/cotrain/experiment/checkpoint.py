"""The run folder's checkpoint: written after every round, read back by ``cotrain run --resume``.

``checkpoint.pt`` (replaced atomically: a temporary file, then ``os.replace``) holds, after round r:
the state a round loop named (global model, aggregator, server optimisers, observers, the loop's
own values and history; see :mod:`cotrain.federated.checkpoint`), every in-process participant's
state (``Participant.get_state()``), the global random generators (torch, NumPy, Python), and how
many lines of ``metrics.jsonl`` and ``ledger.jsonl`` belong to rounds 1..r. The ledger (every
message, privacy spend, rejection, failure) is appended to ``ledger.jsonl`` round by round, so a
resumed run reads it back from there rather than from the checkpoint. Everything in the file is
tensors and plain values, loaded with ``torch.load(weights_only=True)``: no pickled code.
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from cotrain.errors import CotrainError
from cotrain.experiment.rundir import RunFolder, atomic_write
from cotrain.federated.checkpoint import RoundHook, Values
from cotrain.runtime.grid import Participant
from cotrain.runtime.ledger import Ledger

log = logging.getLogger(__name__)
FORMAT = 1


class CheckpointError(CotrainError):
    """A checkpoint that does not fit the run resuming from it."""


class RunInterrupted(CotrainError):
    """The run stopped after a round because a stop was asked for; its checkpoint resumes it.

    Attributes:
        run_dir: the run folder; ``rounds_done``, ``rounds_total``: where it stopped;
        signal: ``"SIGINT"``, ``"SIGTERM"``, or ``"stop_after_round"``.
    """

    def __init__(self, run_dir: Path, rounds_done: int, rounds_total: int, signal: str) -> None:
        self.run_dir, self.rounds_done, self.rounds_total, self.signal = run_dir, rounds_done, rounds_total, signal
        super().__init__(f"interrupted ({signal}) after round {rounds_done} of {rounds_total}; "
                         f"resume with: cotrain run --resume {run_dir}")


# -- files --------------------------------------------------------------------------------
def keep_lines(path: Path, n: int) -> None:
    """Cut ``path`` to its first ``n`` lines (what a checkpoint vouches for); an error if it has fewer."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []
    if len(lines) < n:
        raise CheckpointError(f"resume: {path} has {len(lines)} lines, the checkpoint counts {n}")
    if len(lines) > n:
        atomic_write(path, lambda tmp: tmp.write_text("".join(lines[:n]), encoding="utf-8"))


# -- state of objects ---------------------------------------------------------------------
def capture(obj: Any) -> Any:
    """The state of ``obj``: ``state_dict()`` (modules, optimisers, aggregators, observers),
    ``get_state()`` (participants, nodes), per key or item of mappings and lists; None stays None."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return {str(k): capture(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [capture(v) for v in obj]
    if isinstance(obj, Participant) or (hasattr(obj, "get_state") and not hasattr(obj, "state_dict")):
        return dict(obj.get_state())
    if hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict"):
        return obj.state_dict()
    raise TypeError(f"cannot checkpoint a {type(obj).__name__}: give it state_dict() and load_state_dict()")


def restore(obj: Any, state: Any, where: str = "state") -> None:
    """Put ``state`` (from :func:`capture` of the same structure) back into ``obj``, in place."""
    if obj is None or state is None:
        if (obj is None) != (state is None):
            raise CheckpointError(f"resume: the checkpoint's {where} does not fit this run")
        return
    if isinstance(obj, Mapping):
        if set(map(str, obj)) != set(state):
            raise CheckpointError(f"resume: the checkpoint's {where} has {sorted(state)}, this run {sorted(obj)}")
        for k, v in obj.items():
            restore(v, state[str(k)], f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        if len(obj) != len(state):
            raise CheckpointError(f"resume: the checkpoint's {where} has {len(state)} items, this run {len(obj)}")
        for i, (v, s) in enumerate(zip(obj, state)):
            restore(v, s, f"{where}[{i}]")
    elif isinstance(obj, Participant) or (hasattr(obj, "set_state") and not hasattr(obj, "load_state_dict")):
        obj.set_state(state)
    else:
        obj.load_state_dict(state)


def rng_state() -> dict[str, Any]:
    """The global generators of torch, NumPy and Python (dropout and anything else drawing from them)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]}


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


# -- the run's checkpoint -----------------------------------------------------------------
class RunCheckpoint:
    """The checkpoint of one run folder: what it last saved (``saved``, None for a fresh run) and
    the stop conditions checked after each round (``stop_requested`` is set by a signal handler).

    The runner counts ``metrics_lines`` (one a finished round); :meth:`hook` gives each round
    loop its :class:`~cotrain.federated.checkpoint.RoundHook`.
    """

    def __init__(self, folder: RunFolder, *, total_rounds: int, saved: dict[str, Any] | None = None,
                 stop_after_round: int | None = None) -> None:
        self.folder, self.total_rounds, self.saved = folder, total_rounds, saved
        self.stop_after_round = stop_after_round
        self.stop_requested: str | None = None
        self.metrics_lines = int(saved["metrics_lines"]) if saved else 0
        self.rounds_saved = self.metrics_lines  # rounds the checkpoint on disk holds
        self.ledger_counts: dict[str, int] = dict(saved["ledger_counts"]) if saved else {}
        self.ledger_lines = int(saved["ledger_lines"]) if saved else 0
        self.extra: dict[str, Any] = dict(saved["run"]) if saved else {}  # the runner's own values (start, resumes)
        self._t0, self.seconds_before = time.perf_counter(), float(self.extra.get("seconds", 0.0))

    def seconds(self) -> float:
        """Seconds this run has trained, over every process that ran it."""
        return self.seconds_before + time.perf_counter() - self._t0

    @property
    def path(self) -> Path:
        return self.folder.checkpoint

    @classmethod
    def load(cls, folder: RunFolder, **kwargs: Any) -> "RunCheckpoint":
        saved = torch.load(folder.checkpoint, weights_only=True)
        if saved.get("format") != FORMAT:
            raise CheckpointError(f"resume: {folder.checkpoint} is of format {saved.get('format')}, not {FORMAT}")
        return cls(folder, saved=saved, **kwargs)

    def hook(self, *, ledger: Ledger, participants: Mapping[str, Any] | None = None) -> RoundHook:
        """The hook of a loop whose messages go on ``ledger``, with these in-process ``participants``."""
        return _RunHook(self, ledger, dict(participants or {}))

    def save(self, round: int, ledger: Ledger, state: dict[str, Any]) -> None:
        """Append round ``round``'s ledger lines, then replace ``checkpoint.pt``."""
        self._append_ledger(ledger)
        content = {"format": FORMAT, "round": int(round), "metrics_lines": self.metrics_lines,
                   "ledger_lines": self.ledger_lines, "ledger_counts": dict(self.ledger_counts),
                   "rng": rng_state(), "run": {**self.extra, "seconds": self.seconds()}, **state}
        atomic_write(self.path, lambda tmp: torch.save(content, tmp))
        self.rounds_saved = self.metrics_lines
        if self.metrics_lines < self.total_rounds:
            why = self.stop_requested or ("stop_after_round" if self.stop_after_round is not None
                                          and self.metrics_lines >= self.stop_after_round else None)
            if why is not None:
                raise RunInterrupted(self.folder.path, self.metrics_lines, self.total_rounds, why)

    def _append_ledger(self, ledger: Ledger) -> None:
        names = [f.name for f in fields(Ledger)]
        chunk = Ledger(**{n: getattr(ledger, n)[self.ledger_counts.get(n, 0):] for n in names})
        tmp = self.folder.path / ".ledger-chunk.jsonl"
        chunk.write_jsonl(tmp)
        with open(self.folder.ledger, "a", encoding="utf-8") as f:
            f.write(tmp.read_text(encoding="utf-8"))
            f.flush()
            os.fsync(f.fileno())
        tmp.unlink()
        self.ledger_lines += sum(len(getattr(chunk, n)) for n in names)
        self.ledger_counts = {n: len(getattr(ledger, n)) for n in names}

    def restore_ledger(self, ledger: Ledger) -> None:
        """Fill ``ledger`` (in place) with the checkpoint's part of ``ledger.jsonl``."""
        read = Ledger.read_jsonl(self.folder.ledger) if self.ledger_lines else Ledger()
        counts = {f.name: len(getattr(read, f.name)) for f in fields(Ledger)}
        if counts != {n: self.ledger_counts.get(n, 0) for n in counts}:
            raise CheckpointError(f"resume: {self.folder.ledger} holds {counts}, the checkpoint {self.ledger_counts}")
        for name in counts:
            setattr(ledger, name, getattr(read, name))


class _RunHook:
    """A loop's hook: the loop's parts and values, plus participants, ledger and random generators."""

    def __init__(self, run: RunCheckpoint, ledger: Ledger, participants: dict[str, Any]) -> None:
        self.run, self.ledger, self.participants = run, ledger, participants

    def resume(self, parts: Mapping[str, Any]) -> dict[str, Any] | None:
        saved = self.run.saved
        if saved is None:
            return None
        restore(dict(parts), saved["parts"], "parts")
        restore(self.participants, saved["participants"], "participants")
        self.run.restore_ledger(self.ledger)
        set_rng_state(saved["rng"])
        log.info("resuming %s after round %d", self.run.folder.path, saved["round"])
        return saved["values"]

    def round_done(self, round: int, parts: Mapping[str, Any], values: Values) -> None:
        self.run.save(round, self.ledger, {"parts": capture(dict(parts)),
                                           "participants": capture(self.participants), "values": values()})
