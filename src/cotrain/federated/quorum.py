"""One FedAvg round's uploads: sample, send, validate, and re-send while the round lacks a quorum.

A round asks a seeded sample of participants (:func:`sample_participants`) for an upload; each
reply is validated (:mod:`cotrain.federated.validation`); participants that give no reply (their
handler raised, they timed out) are failed. When fewer than ``min_participants`` uploads are
usable, the round's instruction is re-sent to a fresh sample (attempt ``a`` draws from the stream
``("sampling", round, "retry", a)``), up to ``round_retries`` times; the earlier attempts are kept
in the round record. A round still short after its last retry stops the run: a
:class:`QuorumError` (or :class:`UploadsRejectedError` when every reply came back unusable).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

import torch

from cotrain.errors import RunFailedError
from cotrain.federated.validation import upload_problem
from cotrain.runtime.grid import Grid
from cotrain.runtime.message import Message
from cotrain.seeding import numpy_rng

if TYPE_CHECKING:
    from cotrain.federated.server import FedAvgSettings

log = logging.getLogger(__name__)


class UploadsRejectedError(RunFailedError):
    """No upload of a round could be aggregated."""


class QuorumError(RunFailedError):
    """Fewer usable uploads in a round than ``min_participants``, after every retry.

    ``resumable``: the run's checkpoint of its last finished round is kept; once enough participants
    are back, resuming goes on from there.
    """

    resumable = True


@dataclass
class Attempt:
    """One sending of a round's instruction: who was asked, what came back usable, and who not."""

    participants: list[str]
    accepted: dict[str, Message] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"participants": list(self.participants), "failed": dict(self.failed), "rejected": dict(self.rejected)}


def sample_participants(ids: list[str], settings: "FedAvgSettings", *, seed: int, round: int,
                        attempt: int = 0) -> list[str]:
    """The participants of ``round`` (of its ``attempt``-th retry): a seeded sample without
    replacement, sorted."""
    if not ids:
        raise RuntimeError("no participants are connected")
    k = settings.participants_per_round or max(1, math.ceil(settings.fraction * len(ids)))
    if k > len(ids):
        raise ValueError(f"{k} participants per round asked for, only {len(ids)} connected")
    rng = numpy_rng(seed, "sampling", round) if attempt == 0 else numpy_rng(seed, "sampling", round, "retry", attempt)
    return sorted(str(ids[i]) for i in rng.choice(len(ids), size=k, replace=False))


def ask(grid: Grid, message: Message, reference: Mapping[str, torch.Tensor], chosen: list[str],
        settings: "FedAvgSettings", *, round: int) -> Attempt:
    """Send ``message`` to ``chosen`` and sort the replies into accepted, rejected (with the
    validator's reason, also on the ledger) and failed."""
    replies = grid.send_and_receive({pid: message for pid in chosen}, round=round, allow_failures=True,
                                    timeout_s=settings.round_timeout_s)
    out = Attempt(participants=list(chosen), failed=dict(grid.failures))
    for pid in sorted(replies):
        problem = upload_problem(replies[pid], reference, upload=settings.upload,
                                 max_examples=settings.max_examples, max_update_norm=settings.max_update_norm)
        if problem is None:
            out.accepted[pid] = replies[pid]
        else:
            out.rejected[pid] = problem
            grid.ledger.record_rejection(round=round, participant=pid, reason=problem)
    return out


def gather(grid: Grid, message: Message, reference: Mapping[str, torch.Tensor], settings: "FedAvgSettings", *,
           seed: int, round: int) -> tuple[Attempt, list[Attempt]]:
    """The attempt of ``round`` that reached the quorum, and the earlier ones that did not."""
    earlier: list[Attempt] = []
    for a in range(settings.round_retries + 1):
        chosen = sample_participants(grid.participant_ids(), settings, seed=seed, round=round, attempt=a)
        attempt = ask(grid, message, reference, chosen, settings, round=round)
        if len(attempt.accepted) >= settings.min_participants:
            return attempt, earlier
        earlier.append(attempt)
        if a < settings.round_retries:
            log.info("round %d: %d usable upload(s), fewer than %d; re-sent to a fresh sample (retry %d of %d)",
                     round, len(attempt.accepted), settings.min_participants, a + 1, settings.round_retries)
    raise short_round_error(round, earlier[-1], settings)


def short_round_error(round: int, attempt: Attempt, settings: "FedAvgSettings") -> RunFailedError:
    """Why the run stops at ``round``: every reply unusable, or too few usable ones."""
    usable, failed, rejected = len(attempt.accepted), attempt.failed, attempt.rejected
    retried = f", after {settings.round_retries} retr{'y' if settings.round_retries == 1 else 'ies'}" \
        if settings.round_retries else ""
    listed = lambda d: "; ".join(f"{p}: {r}" for p, r in d.items()) or "none"
    if usable == 0 and rejected:
        diverged = all("NaN or infinite" in r for r in rejected.values())
        return UploadsRejectedError(
            f"round {round}: every upload was rejected{retried} ({listed(rejected)})"
            + (f"; failed: {listed(failed)}" if failed else "")
            + ("; training diverged: lower the learning rate" if diverged else "")
            + f"; the global model of round {round - 1} is kept")
    return QuorumError(f"round {round}: {usable} usable upload(s) of {len(attempt.participants)} asked for, fewer "
                       f"than min_participants = {settings.min_participants}{retried} (failed: {listed(failed)}; "
                       f"rejected: {listed(rejected)})")
