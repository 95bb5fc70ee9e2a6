"""Experiments on the parallel runtime (``run.runtime = "parallel"``): a pool of worker processes.

A method hands :func:`parallel_grid` a picklable factory of its participants; the workers build
them from it (its data shared, not copied) and the server loop runs unchanged in this process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from cotrain.runtime.parallel import ParallelGrid, ParticipantFactory

if TYPE_CHECKING:
    from cotrain.experiment.config import ExperimentConfig


def worker_count(cfg: "ExperimentConfig") -> int:
    """``run.workers``, default the core count."""
    return cfg.run.workers or os.cpu_count() or 1


def worker_threads(cfg: "ExperimentConfig") -> int:
    """``run.threads`` per worker, default the cores shared out (never oversubscribed)."""
    return cfg.run.threads or max(1, (os.cpu_count() or 1) // worker_count(cfg))


def parallel_grid(cfg: "ExperimentConfig", factory: ParticipantFactory, ids: Sequence[str], *,
                  work: Mapping[str, float] | None = None) -> ParallelGrid:
    """The run's :class:`ParallelGrid` over ``factory`` (``ids[i]`` is ``factory(i)``'s id)."""
    return ParallelGrid(factory, ids, workers=worker_count(cfg), threads=worker_threads(cfg), work=work)


class GridParticipants(Mapping):
    """Participants by id, built on access from a :class:`ParallelGrid`'s factory and stored state:
    what the experiment reads of a participant for scoring (an audit's truth) without keeping them."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = list(ids)
        self.grid: ParallelGrid | None = None

    def __getitem__(self, pid: str) -> Any:
        if self.grid is None:
            raise RuntimeError("no parallel grid yet: participants are read once the run has started")
        return self.grid.materialise(pid)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)
