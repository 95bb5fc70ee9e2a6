"""The in-process runtime: every party in one Python process (the default, and what tests use)."""

from __future__ import annotations

import time
from typing import Mapping

from cotrain.runtime.grid import Grid, Participant
from cotrain.runtime.ledger import Ledger
from cotrain.runtime.message import Message


class InProcessGrid(Grid):
    """Delivers messages by calling participants' handlers directly, one after the other.

    Messages are detached copies in both directions, so neither side can reach the other's
    tensors (or autograd graph) through a message.

    A reply timeout (``send_and_receive(..., timeout_s=T)``) is enforced by measuring: each
    handler runs to its end (so a straggler's own state is what a real straggler's would be: it
    did train) and a reply that took longer than ``T`` seconds is discarded, the participant
    recorded as failed, "timed out after T s". Each reply is timed on its own, as if participants
    worked in parallel, as on a real federation. No thread is left running into the next round,
    so participants' states and draws stay deterministic; whether a reply is late is as
    deterministic as its timing is far from ``T`` (the reason names ``T``, not the time measured).
    """

    enforces_timeout = True

    def __init__(self, participants: Mapping[str, Participant], *, ledger: Ledger | None = None) -> None:
        self._participants = dict(participants)
        self.ledger = ledger if ledger is not None else Ledger()
        self.failures = {}
        self.catch_failures = True  # False: a handler's exception propagates with its traceback (debugging)

    def participant_ids(self) -> list[str]:
        return sorted(self._participants)

    def _deliver(self, messages: dict[str, Message], *, round: int) -> dict[str, Message]:
        replies = {}
        limit = getattr(self, "_timeout_s", None)
        for pid, message in messages.items():
            t0 = time.perf_counter()
            try:
                reply = self._participants[pid].handle(message.detached()).detached()
            except Exception as exc:  # the participant's own failure: the server records it, and may go on
                if not self.catch_failures:
                    raise
                self._failed[pid] = f"{type(exc).__name__}: {exc}"
                continue
            if limit is not None and time.perf_counter() - t0 > limit:
                self._failed[pid] = f"timed out after {limit:g} s"
                continue
            replies[pid] = reply
        return replies
