"""The experiment's round record: one typed row of ``metrics.jsonl`` for every method.

Each method turns its protocol's own record (FedAvg's ``RoundRecord``, split learning's
``EpochRecord``, FADA's ``FadaRound``) into an :class:`ExperimentRound`; the runner, the plots and
the report read only this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from cotrain.errors import RunFailedError
from cotrain.federated.server import RoundRecord


@dataclass
class ExperimentRound:
    """One round (or epoch) as the run folder records it.

    Attributes:
        round: 1-based round number.
        test_accuracy, test_loss: the experiment's score of the shared model (NaN when not scored;
            a test_loss of None: the method does not measure one, e.g. ECOS scores at the client).
        seconds: wall-clock seconds of the round.
        bytes_up, bytes_down: tensor bytes on the ledger this round.
        participants: who took part.
        participant_metrics: per participant, what it reported (loss, example count, ...).
        aggregation: the rule's record (weights, scores, excluded), when the round aggregated.
        rejected: participant -> why its upload failed validation and was not aggregated.
        failed: participant -> why it gave no reply (its handler raised, it timed out, its node died).
        extra: method-specific keys (``phase``, ``train_loss``, ...), written at the top level.
    """

    round: int
    test_accuracy: float = math.nan
    test_loss: float | None = math.nan
    seconds: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    participants: list[str] = field(default_factory=list)
    participant_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    aggregation: dict[str, Any] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "extra"}
        d["participants"] = list(self.participants)
        clash = set(self.extra) & set(d)
        if clash:
            raise ValueError(f"round record: extra keys {sorted(clash)} clash with the standard ones")
        return {**d, **self.extra}


def round_json(r: RoundRecord) -> dict[str, Any]:
    """A FedAvg round as the experiment's record (``retries``: its earlier attempts below quorum, if any)."""
    return ExperimentRound(round=r.round, test_accuracy=r.test_accuracy, test_loss=r.test_loss, seconds=r.seconds,
                           bytes_up=r.bytes_up, bytes_down=r.bytes_down, participants=list(r.participants),
                           participant_metrics=r.participant_metrics, aggregation=r.aggregation,
                           rejected=r.rejected, failed=r.failed,
                           extra={"retries": r.retries} if r.retries else {}).to_json()


class DivergedError(RunFailedError):
    """Training diverged: a loss the server measured is NaN or infinite."""


def divergence(record: dict[str, Any]) -> str | None:
    """Why round ``record`` diverged, or None: the server's test loss of a scored round (test
    accuracy present) or its own training loss (split learning's centre) is NaN or infinite.
    Losses participants report are not trusted for this: one participant could stop everyone."""
    scored = isinstance(record.get("test_accuracy"), (int, float)) and math.isfinite(record["test_accuracy"])
    for key, counts in (("test_loss", scored), ("train_loss", True)):
        value = record.get(key)
        if counts and isinstance(value, (int, float)) and not math.isfinite(value):
            return f"{key.replace('_', ' ')} is {value}"
    return None
