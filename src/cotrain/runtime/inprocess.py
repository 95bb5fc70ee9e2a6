"""The in-process runtime: every party in one Python process (the default, and what tests use)."""

from __future__ import annotations

from typing import Mapping

from cotrain.runtime.grid import Grid, Participant
from cotrain.runtime.ledger import Ledger
from cotrain.runtime.message import Message


class InProcessGrid(Grid):
    """Delivers messages by calling participants' handlers directly.

    Messages are detached copies in both directions, so neither side can reach the other's
    tensors (or autograd graph) through a message.
    """

    def __init__(self, participants: Mapping[str, Participant], *, ledger: Ledger | None = None) -> None:
        self._participants = dict(participants)
        self.ledger = ledger if ledger is not None else Ledger()
        self.failures = {}
        self.catch_failures = True  # False: a handler's exception propagates with its traceback (debugging)

    def participant_ids(self) -> list[str]:
        return sorted(self._participants)

    def _deliver(self, messages: dict[str, Message], *, round: int) -> dict[str, Message]:
        replies = {}
        for pid, message in messages.items():
            try:
                replies[pid] = self._participants[pid].handle(message.detached()).detached()
            except Exception as exc:  # the participant's own failure: the server records it, and may go on
                if not self.catch_failures:
                    raise
                self._failed[pid] = f"{type(exc).__name__}: {exc}"
        return replies
