"""Typed inputs and outputs of every aggregation rule.

An :class:`Upload` is what one participant sent in one round, as the server received it; an
:class:`Aggregate` is what a rule made of a round's uploads: the combined tensors and, for the
round record and the report, each participant's effective weight, its score and who was excluded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch

from cotrain.runtime.spend import PrivacySpend

Tensors = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Upload:
    """One participant's upload.

    Attributes:
        participant: its id.
        tensors: the named tensors it sent (parameters, or gradients for FedSGD).
        weight: its weight in a weighted rule (FedAvg: its example count), > 0.
        group: the user group the server put it in this round, if any.
    """

    participant: str
    tensors: Tensors
    weight: float = 1.0
    group: int | None = None

    def __post_init__(self) -> None:
        if not float(self.weight) > 0:
            raise ValueError(f"upload of {self.participant!r}: weight must be > 0, got {self.weight}")


@dataclass
class Aggregate:
    """What a rule made of one round's uploads.

    Attributes:
        tensors: the aggregate, in the space of the uploads (parameters in, parameters out).
        weights: participant -> the weight it effectively got (sums to 1 over the included ones
            for weighted rules; rules with no per-participant weight, such as the median, leave it empty).
        scores: participant -> the rule's score of its upload (e.g. Krum's score, a credit score).
        excluded: participants whose upload the rule left out this round, sorted.
        info: anything else worth a line in the round record (e.g. a threshold).
        spends: the noised releases the rule made (server-side DP); the server loop records each
            on the ledger (``ledger.record_privacy``).
    """

    tensors: dict[str, torch.Tensor]
    weights: dict[str, float] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    info: dict[str, float] = field(default_factory=dict)
    spends: list[PrivacySpend] = field(default_factory=list)

    def to_json(self) -> dict:
        """The round record's view: everything but the tensors."""
        return {"weights": dict(self.weights), "scores": dict(self.scores), "excluded": list(self.excluded),
                **({"info": dict(self.info)} if self.info else {})}
