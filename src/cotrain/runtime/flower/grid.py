"""A cotrain :class:`~cotrain.runtime.Grid` over Flower's server-side ``Grid``.

Server protocol code (``run_fedavg`` and the others) runs unchanged inside a Flower ``ServerApp``:
messages are converted to Flower records, sent to the SuperNode that holds each participant, and
the replies are converted back. Both directions are recorded on the cotrain ledger exactly as the
in-process runtime records them (the cotrain message, not Flower's envelope).

Flower addresses nodes by node id; cotrain addresses participants by participant id. The grid
learns the mapping once, with a ``cotrain.hello`` query that each node answers with its
``partition-id`` (its node config). That handshake is runtime plumbing, not protocol traffic, and
carries no tensors, so it is not on the ledger.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from flwr.app import ConfigRecord, RecordDict
from flwr.app import Message as FlowerMessage
from flwr.serverapp import Grid as FlowerGrid

from cotrain.errors import RunFailedError
from cotrain.runtime.flower.records import (META_KEY, flower_message_type, message_to_record_dict,
                                            record_dict_to_message)
from cotrain.runtime.grid import Grid
from cotrain.runtime.ledger import Ledger
from cotrain.runtime.message import Message

HELLO = "cotrain.hello"
log = logging.getLogger(__name__)
IdOf = Callable[[int], str]


class FlowerRuntimeError(RunFailedError):
    """A node failed, did not answer in time, or is not the node the grid expected."""


def _hello_message() -> RecordDict:
    return RecordDict({META_KEY: ConfigRecord({"kind": HELLO})})


class FlowerMessageGrid(Grid):
    """Delivers cotrain messages through a Flower ``Grid`` (simulation or deployment engine).

    Args:
        grid: the Flower grid handed to the ``ServerApp``'s main function.
        expected: how many participants (nodes) the run needs; the grid waits for them.
        id_of: participant index (a node's ``partition-id``) -> cotrain participant id.
        wait_s: how long to wait for ``expected`` nodes to connect.
        reply_timeout_s: how long to wait for the replies of one exchange (None: forever).
    """

    def __init__(self, grid: FlowerGrid, *, expected: int, id_of: IdOf, ledger: Ledger | None = None,
                 wait_s: float = 120.0, reply_timeout_s: float | None = 600.0, poll_s: float = 0.2) -> None:
        self._grid = grid
        self.ledger = ledger if ledger is not None else Ledger()
        self.failures: dict[str, str] = {}
        self._reply_timeout_s = reply_timeout_s
        self._poll_s = poll_s
        self._node_of = self._discover(expected, id_of, wait_s, poll_s)

    # -- node discovery ------------------------------------------------------------------
    def _discover(self, expected: int, id_of: IdOf, wait_s: float, poll_s: float) -> dict[str, int]:
        deadline = time.monotonic() + wait_s
        nodes = sorted(self._grid.get_node_ids())
        while len(nodes) < expected:
            if time.monotonic() > deadline:
                raise FlowerRuntimeError(f"only {len(nodes)} of {expected} Flower nodes connected within {wait_s} s "
                                         "(node_wait_s)")
            time.sleep(poll_s)
            nodes = sorted(self._grid.get_node_ids())
        messages = [FlowerMessage(_hello_message(), node, "query", group_id="hello") for node in nodes]
        replies = self._exchange(messages, what="hello")
        node_of: dict[str, int] = {}
        for node, reply in replies.items():
            index = int(reply.content[META_KEY]["index"])
            pid = id_of(index)
            if pid in node_of:
                raise FlowerRuntimeError(f"nodes {node_of[pid]} and {node} both claim partition-id {index}")
            node_of[pid] = node
        return node_of

    def _send_and_receive(self, messages: list[FlowerMessage]) -> dict[int, FlowerMessage]:
        """Push, then pull every ``poll_s`` until all replies are in or the reply timeout passes;
        the replies by the node each message went to.

        Replies are matched by the message they answer, not by their sender: the SuperLink itself
        answers for a node it has missed heartbeats from (an error reply, from the SuperLink's
        node id). Flower's own ``send_and_receive`` sleeps 3 s between pulls. A pull that fails
        (the SuperLink busy) is retried until the deadline, not fatal."""
        pushed = {str(i) for i in self._grid.push_messages(messages) if i}
        # both Flower grids set each message's id as they push it (and skip or None the ones they refuse)
        node_of = {m.metadata.message_id: m.metadata.dst_node_id for m in messages if m.metadata.message_id in pushed}
        waiting = set(node_of)
        deadline = None if self._reply_timeout_s is None else time.monotonic() + self._reply_timeout_s
        replies: dict[int, FlowerMessage] = {}
        while waiting and (deadline is None or time.monotonic() < deadline):
            try:
                got = list(self._grid.pull_messages(waiting))
            except Exception as err:  # noqa: BLE001 - a transient transport error; the deadline bounds it
                log.warning("pulling replies failed (%s); retrying", err)
                got = []
            for reply in got:
                mid = reply.metadata.reply_to_message_id
                if mid in waiting:
                    replies[node_of[mid]] = reply
                    waiting.discard(mid)
            if waiting:
                time.sleep(self._poll_s)
        return replies

    def _exchange(self, messages: list[FlowerMessage], *, what: str, strict: bool = True) -> dict[int, FlowerMessage]:
        """Send and wait for the replies, by node id; ``strict``: fail loudly on errors or missing replies
        (the handshake), else hand them back for the grid to record as failures."""
        wanted = {m.metadata.dst_node_id for m in messages}
        replies = self._send_and_receive(messages)
        if not strict:
            return replies
        for node, reply in sorted(replies.items()):
            if reply.has_error():
                raise FlowerRuntimeError(f"node {node} failed on {what!r}: {reply.error.reason}")
        missing = sorted(wanted - set(replies))
        if missing:
            raise FlowerRuntimeError(f"no reply to {what!r} from nodes {missing} within {self._reply_timeout_s} s "
                                     "(reply_timeout_s)")
        return replies

    # -- Grid ----------------------------------------------------------------------------
    def node_id(self, participant_id: str) -> int:
        """The Flower node that holds ``participant_id``."""
        return self._node_of[participant_id]

    def participant_ids(self) -> list[str]:
        return sorted(self._node_of)

    def _deliver(self, messages: dict[str, Message], *, round: int) -> dict[str, Message]:
        out: list[FlowerMessage] = []
        for pid, message in messages.items():
            out.append(FlowerMessage(message_to_record_dict(message), self._node_of[pid],
                                     flower_message_type(message.kind), group_id=str(round)))
        kinds = sorted({m.kind for m in messages.values()})
        replies = self._exchange(out, what=",".join(kinds), strict=False)
        pid_of = {node: pid for pid, node in self._node_of.items()}
        received: dict[str, Message] = {}
        for node in sorted(replies, key=lambda n: pid_of[n]):
            pid = pid_of[node]
            if replies[node].has_error():
                self._failed[pid] = f"node {node} failed: {replies[node].error.reason}"
                continue
            try:
                received[pid] = record_dict_to_message(replies[node].content)
            except (KeyError, ValueError, TypeError) as err:  # a reply that is no cotrain message
                self._failed[pid] = f"node {node} sent an unreadable reply: {err}"
        for pid in messages:
            if pid not in received and pid not in self._failed:
                self._failed[pid] = f"no reply from node {self._node_of[pid]} within {self._reply_timeout_s} s"
        return received
