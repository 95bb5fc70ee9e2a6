"""A protocol as a distributed runtime runs it: generic over an opaque job description.

A :class:`FlowerJob` knows how to serve the protocol's server side on any :class:`Grid` and how to
build participant ``i``, both from the same description string (e.g. an experiment config as
JSON). The runtime never decodes it, so the runtime imports nothing above itself; each method's
job lives with the method.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from cotrain.runtime.grid import Grid, Participant


@dataclass
class ServerResult:
    """What a job's server side hands back: per-round records (JSON-ready), the final model, and
    JSON artefacts of the job's own (e.g. what a curious server's observers found)."""

    history: list[dict[str, Any]]
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FlowerJob:
    """A protocol as the Flower apps run it.

    Attributes:
        serve: ``serve(grid, description) -> ServerResult``, the server loop.
        build_participant: ``build_participant(description, index) -> Participant``.
        num_participants: ``num_participants(description) -> int``, how many nodes the run needs.
        participant_id: ``participant_id(description, index) -> str``.
        exchanges: ``exchanges(description) -> int``, about how many exchanges (``send_and_receive``
            calls) the run makes; the launchers scale their default time limits with it (None: one).
    """

    serve: Callable[[Grid, str], ServerResult]
    build_participant: Callable[[str, int], Participant]
    num_participants: Callable[[str], int]
    participant_id: Callable[[str, int], str]
    exchanges: Callable[[str], int] | None = None


def load_job(ref: str) -> FlowerJob:
    """The :class:`FlowerJob` named ``"module:attribute"``."""
    module, _, attr = ref.partition(":")
    job = getattr(importlib.import_module(module), attr)
    if not isinstance(job, FlowerJob):
        raise TypeError(f"{ref} is {type(job).__name__}, not a FlowerJob")
    return job
