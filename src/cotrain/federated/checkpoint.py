"""The hook every round loop calls, so that a run can stop after any round and resume there.

A loop (FedAvg, split learning, FADA) names the objects it holds whose state lives across rounds
(``parts``: the global model, the aggregator, server optimisers, observers; anything with
``state_dict()`` / ``load_state_dict()`` or ``get_state()`` / ``set_state()``) and gives its own
plain values (its history, loop variables) as a function, and calls:

* ``saved = hook.resume(parts)`` once, before its first round: a fresh run gets None; a resumed
  one gets its values back, ``parts`` restored in place, and goes on from the round after;
* ``hook.round_done(round, parts, values)`` after each round. The hook may write a checkpoint and
  may raise (a stop was asked for) once the round's state is safe.

What the hook does with them (a file in the run folder, participants' states, the ledger, random
generators) is the experiment's business (:mod:`cotrain.experiment.checkpoint`); the loop only
says what its state is.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol

Values = Callable[[], dict[str, Any]]


class RoundHook(Protocol):
    """What a round loop calls to be resumable (see the module docstring)."""

    def resume(self, parts: Mapping[str, Any]) -> dict[str, Any] | None:
        """Restore ``parts`` from the last checkpoint and return the loop's values (None: a fresh run)."""

    def round_done(self, round: int, parts: Mapping[str, Any], values: Values) -> None:
        """Round ``round`` is finished; ``parts`` and ``values()`` are the loop's state after it."""


class NoCheckpoint:
    """The hook of a run that keeps no checkpoint: starts at round 1, saves nothing."""

    def resume(self, parts: Mapping[str, Any]) -> dict[str, Any] | None:
        return None

    def round_done(self, round: int, parts: Mapping[str, Any], values: Values) -> None:
        return None


NO_CHECKPOINT = NoCheckpoint()
