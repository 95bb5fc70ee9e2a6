"""Server side and participant side of every protocol.

Server logic is written against :class:`Grid` (send messages to participants, receive replies).
Participant logic is a :class:`Participant` whose handlers are keyed by message kind. A runtime
(in-process, Flower) connects the two and records every message on the :class:`Ledger`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, ClassVar, Mapping

import torch

from cotrain.errors import RunFailedError
from cotrain.runtime.ledger import SERVER, Ledger
from cotrain.runtime.message import Message

Handler = Callable[[Message], Message]


class Grid(ABC):
    """What the server sees of the participants: their ids, and replies to its messages.

    :meth:`send_and_receive` is a template method: it checks the addressees, records every message
    on ``self.ledger``, hands them to the runtime's :meth:`_deliver` and records every reply, so no
    runtime can forget the ledger. Runtimes implement :meth:`participant_ids` and :meth:`_deliver`.
    """

    ledger: Ledger
    failures: dict[str, str]
    """After each :meth:`send_and_receive`: participant -> why it gave no reply (empty: all replied)."""
    enforces_timeout: ClassVar[bool] = False
    """Whether :meth:`_deliver` honours ``self._timeout_s`` (a reply later than that is a failure)."""

    @abstractmethod
    def participant_ids(self) -> list[str]:
        """Ids of the participants that are connected, sorted."""

    @abstractmethod
    def _deliver(self, messages: dict[str, Message], *, round: int) -> dict[str, Message]:
        """Runtime-specific delivery: ``messages[pid]`` to ``pid``, their replies by id. A participant
        that fails (its handler raised, its node died, it timed out) is left out of the replies and
        named with its reason in ``self._failed``. A runtime that ``enforces_timeout`` treats a
        reply later than ``self._timeout_s`` seconds (None: no limit) as such a failure."""

    def send_and_receive(self, messages: Mapping[str, Message], *, round: int,
                         allow_failures: bool = False, timeout_s: float | None = None) -> dict[str, Message]:
        """Deliver ``messages[pid]`` to each participant ``pid``; return their replies by id (sorted).

        Both directions are recorded on ``self.ledger``, down before delivery, up on receipt. With
        ``allow_failures`` a participant that gives no reply is left out (``self.failures`` says why,
        and the ledger records it); otherwise that is a :class:`ParticipantFailedError`.
        ``timeout_s``: a participant whose reply takes longer has failed ("timed out after ... s");
        a ``ValueError`` on a runtime that cannot enforce it, rather than a limit silently ignored.
        """
        if timeout_s is not None and not self.enforces_timeout:
            raise ValueError(f"{type(self).__name__} does not enforce a reply timeout (timeout_s = {timeout_s})")
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        connected = set(self.participant_ids())
        ordered = {pid: messages[pid] for pid in sorted(messages)}
        for pid, message in ordered.items():
            if pid not in connected:
                raise KeyError(f"no participant {pid!r}; connected: {sorted(connected)}")
            if not isinstance(message, Message):
                raise TypeError(f"message for {pid!r} is {type(message).__name__}, not a Message")
        for pid, message in ordered.items():
            self.ledger.record(message, sender=SERVER, receiver=pid, round=round)
        self._failed: dict[str, str] = {}
        self._timeout_s = timeout_s
        replies = self._deliver(ordered, round=round)
        for pid in ordered:
            if pid not in replies and pid not in self._failed:
                self._failed[pid] = "no reply"
        self.failures = dict(sorted(self._failed.items()))
        for pid, why in self.failures.items():
            self.ledger.record_failure(round=round, participant=pid, reason=why)
        if self.failures and not allow_failures:
            raise ParticipantFailedError(f"round {round}: " + "; ".join(f"{p} failed: {w}" for p, w in
                                                                        self.failures.items()))
        out: dict[str, Message] = {}
        for pid in sorted(replies):
            self.ledger.record(replies[pid], sender=pid, receiver=SERVER, round=round)
            out[pid] = replies[pid]
        return out


class ParticipantFailedError(RunFailedError):
    """A participant gave no reply to a protocol that cannot go on without it."""


def handler(kind: str) -> Callable[[Handler], Handler]:
    """Mark a :class:`Participant` method as the handler of messages of ``kind``."""

    def mark(fn: Handler) -> Handler:
        fn.__cotrain_handles__ = kind  # type: ignore[attr-defined]
        return fn

    return mark


class Participant:
    """A data owner. Subclasses mark methods with ``@handler("kind")``.

    State that must survive between messages (Flower's deployment engine starts a fresh process
    per message) is whatever :meth:`get_state` returns; the runtime stores it and gives it back
    through :meth:`set_state` before the next message.
    """

    def __init__(self, participant_id: str) -> None:
        self.participant_id = participant_id

    @classmethod
    def handled_kinds(cls) -> dict[str, str]:
        """Message kind -> method name."""
        kinds: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for name, attr in vars(klass).items():
                kind = getattr(attr, "__cotrain_handles__", None)
                if kind is not None:
                    kinds[kind] = name
        return kinds

    def handle(self, message: Message) -> Message:
        kinds = self.handled_kinds()
        if message.kind not in kinds:
            raise ValueError(
                f"participant {self.participant_id!r} cannot handle message kind {message.kind!r}; "
                f"it handles {sorted(kinds)}"
            )
        reply = getattr(self, kinds[message.kind])(message)
        if not isinstance(reply, Message):
            raise TypeError(f"handler for {message.kind!r} returned {type(reply).__name__}, not a Message")
        return reply

    def get_state(self) -> dict[str, torch.Tensor]:
        """Tensors to keep between messages (empty: stateless)."""
        return {}

    def set_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore what :meth:`get_state` returned."""
