"""A low-latency channel for split learning on ``torch.distributed.rpc`` (TensorPipe over TCP).

A per-mini-batch round trip through Flower's messages costs seconds, so split learning runs the
same centre code (:func:`cotrain.split.run_split`, written against :class:`Grid`) over
:class:`RpcGrid`: each agent is a process that serves its :class:`Participant` through
:func:`serve`, and every message in both directions is still recorded on the centre's ledger
(bytes = tensor bytes, as in-process). The 2023 split-training paper's per-batch exchange is one
round trip carrying (B, *cut_shape) activations one way and their gradient the other.

Enrolment is the RPC rendezvous (``init_method="tcp://host:port"``, a fixed world size); the centre
is rank 0 named ``"centre"``, agents are ranks 1..K named by their participant ids.
"""

from __future__ import annotations

import time

import torch
from torch.distributed import rpc

from cotrain.runtime.grid import Grid, Participant, handler
from cotrain.runtime.ledger import Ledger
from cotrain.runtime.message import Message, PayloadKind

CENTRE = "centre"
ECHO = "echo"

_SERVED: Participant | None = None


def _deliver(message: Message) -> Message:
    """Runs in the agent's process: hand the message to the participant it serves."""
    if _SERVED is None:
        raise RuntimeError("this process serves no participant")
    return _SERVED.handle(message).detached()


def _options(address: str, port: int, timeout: float) -> rpc.TensorPipeRpcBackendOptions:
    return rpc.TensorPipeRpcBackendOptions(init_method=f"tcp://{address}:{port}", rpc_timeout=timeout,
                                           num_worker_threads=4, _transports=["uv"], _channels=["basic"])


def serve(participant: Participant, *, rank: int, world_size: int, address: str = "127.0.0.1", port: int,
          timeout: float = 120.0) -> None:
    """Agent process: join the channel, answer the centre's messages, return when the centre shuts down."""
    global _SERVED
    if rank < 1:
        raise ValueError("rank 0 is the centre; agents take ranks 1..K")
    _SERVED = participant
    rpc.init_rpc(participant.participant_id, rank=rank, world_size=world_size,
                 rpc_backend_options=_options(address, port, timeout))
    rpc.shutdown(graceful=True)
    _SERVED = None


class RpcGrid(Grid):
    """The centre's side of the channel: a :class:`Grid` whose messages travel by RPC.

    Messages to several agents are sent concurrently (``rpc_async``) and awaited together, so
    agents of SplitFed compute in parallel. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, *, world_size: int, address: str = "127.0.0.1", port: int, ledger: Ledger | None = None,
                 timeout: float = 120.0) -> None:
        self.ledger = ledger if ledger is not None else Ledger()
        self.failures: dict[str, str] = {}
        rpc.init_rpc(CENTRE, rank=0, world_size=world_size, rpc_backend_options=_options(address, port, timeout))
        self._ids = sorted(w.name for w in rpc._get_current_rpc_agent().get_worker_infos() if w.name != CENTRE)
        self._open = True

    def participant_ids(self) -> list[str]:
        return list(self._ids)

    def _deliver(self, messages: dict[str, Message], *, round: int) -> dict[str, Message]:
        futures = {pid: rpc.rpc_async(pid, _deliver, args=(m.detached(),)) for pid, m in messages.items()}
        return {pid: future.wait() for pid, future in futures.items()}

    def close(self) -> None:
        """Shut the channel down (waits for the agents, which then leave :func:`serve`)."""
        if self._open:
            rpc.shutdown(graceful=True)
            self._open = False

    def __enter__(self) -> "RpcGrid":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EchoAgent(Participant):
    """Replies to ``echo`` with the tensor it received, as activations: one split-learning round trip."""

    @handler(ECHO)
    def echo(self, message: Message) -> Message:
        return Message(ECHO, tensors={"activations": message.tensors["gradient"]}, payload=PayloadKind.ACTIVATIONS)


def round_trip_times(grid: Grid, agent_id: str, shape: tuple[int, ...] = (64, 1024), *, repeats: int = 200,
                     warmup: int = 20) -> list[float]:
    """Seconds per round trip of a float32 tensor of ``shape`` down and back up to an :class:`EchoAgent`,
    through ``grid.send_and_receive`` (ledger recording included)."""
    tensor = torch.randn(*shape)
    message = Message(ECHO, tensors={"gradient": tensor}, payload=PayloadKind.GRADIENTS)
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        grid.send_and_receive({agent_id: message}, round=0)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times
