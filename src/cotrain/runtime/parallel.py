"""The parallel runtime: participants handled by a pool of worker processes, one per core.

A :class:`ParallelGrid` is a :class:`Grid` like the others, so server code is unchanged and the
template method records the same messages on the ledger. Each worker builds the participants it
is given from a picklable *factory* (participant index -> :class:`Participant`): the factory is
sent once per worker, and torch tensors in it travel as shared memory (``torch.multiprocessing``),
so a data set is held once on the machine, not once per worker or per participant.

Participants live only while they handle a message. Between the rounds they take part in, the grid
keeps what :meth:`Participant.get_state` returns (a few tensors, in this process) and gives it back
through :meth:`Participant.set_state` to a fresh participant from the factory: memory grows with the
participants of a round, not with the federation (the contract Flower's deployment engine relies on
too). Because state lives here, any worker can take any participant; each round's participants are
spread by greedy balancing of their work (longest first, onto the least-loaded worker, as pfl does),
ties kept on the worker a participant had last (sticky).

Bit-for-bit equality with :class:`~cotrain.runtime.inprocess.InProcessGrid` holds at the same
per-worker thread count when participants draw randomness from their own seeded streams (every
participant in cotrain does) and keep all cross-message state in ``get_state``.
"""

from __future__ import annotations

import logging
import os
import pickle
import weakref
from dataclasses import replace
from typing import Callable, Mapping, Sequence

import torch
import torch.multiprocessing as mp

from cotrain.runtime.grid import Grid, Participant
from cotrain.runtime.ledger import Ledger
from cotrain.runtime.message import Message

log = logging.getLogger(__name__)

ParticipantFactory = Callable[[int], Participant]
"""Builds participant ``index``; must pickle (a module-level function or a dataclass instance)."""

State = dict[str, torch.Tensor]
_Job = tuple[str, int, int, State]  # participant id, factory index, message key, stored state


def _compact(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached, cloned only when it views a larger storage (pickling would send all of it)."""
    t = t.detach()
    return t.clone() if t.untyped_storage().nbytes() > t.numel() * t.element_size() else t


def _compact_message(message: Message) -> Message:
    return replace(message, tensors={k: _compact(v) for k, v in message.tensors.items()})


def _handle_jobs(factory: ParticipantFactory, jobs: list[_Job], messages: dict[int, Message]
                 ) -> list[tuple[str, Message | None, State | None, str | None]]:
    """Worker side of one round: build, restore, handle, keep the state, drop the participant."""
    uses: dict[int, int] = {}
    for _, _, key, _ in jobs:
        uses[key] = uses.get(key, 0) + 1
    out = []
    for pid, index, key, state in jobs:
        uses[key] -= 1
        # one unpickled copy per worker: a participant gets its own copy only if another will use it after
        message = messages[key].detached() if uses[key] else messages[key]
        try:
            participant = factory(index)
            if participant.participant_id != pid:
                raise ValueError(f"factory({index}) built {participant.participant_id!r}, expected {pid!r}")
            if state:
                participant.set_state(state)
            reply = participant.handle(message)
            out.append((pid, _compact_message(reply),
                        {k: _compact(v) for k, v in participant.get_state().items()}, None))
        except Exception as exc:  # the participant's own failure: the server records it, and may go on
            out.append((pid, None, None, f"{type(exc).__name__}: {exc}"))
        participant = None  # noqa: F841 (freed before the next one is built)
    return out


def _worker_main(conn, factory: ParticipantFactory, threads: int) -> None:
    torch.set_num_threads(threads)
    conn.send_bytes(b"ready")  # imports done and the factory unpickled: start-up is not a round's time
    while True:
        try:
            request = conn.recv_bytes()
        except EOFError:
            return
        command = pickle.loads(request)
        if command is None:
            return
        jobs, messages = command
        conn.send_bytes(pickle.dumps(_handle_jobs(factory, jobs, messages), protocol=pickle.HIGHEST_PROTOCOL))


def balance(work: Mapping[str, float], workers: int, previous: Mapping[str, int]) -> list[list[str]]:
    """Greedy longest-processing-time assignment of ``work`` (participant -> cost) to ``workers``:
    each participant, largest first, goes to the least-loaded worker; among equally loaded workers
    to the one it had last (``previous``), else the lowest. Returns each worker's participants."""
    load = [0.0] * workers
    shares: list[list[str]] = [[] for _ in range(workers)]
    for pid in sorted(work, key=lambda p: (-work[p], p)):
        least = min(load)
        candidates = [w for w in range(workers) if load[w] == least]
        w = previous[pid] if previous.get(pid) in candidates else candidates[0]
        shares[w].append(pid)
        load[w] += work[pid]
    return shares


class ParallelGrid(Grid):
    """Delivers each round's messages to a pool of worker processes.

    Args:
        factory: participant index -> participant (picklable; tensors in it are shared, not copied).
        ids: ``ids[i]`` is the id of ``factory(i)``.
        workers: worker processes (default: the core count).
        threads: torch threads per worker.
        work: relative cost of a participant's round (e.g. its sample count), for balancing; default 1.
        start_method: ``"spawn"`` (default: safe with torch's thread pools) or ``"forkserver"``.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, factory: ParticipantFactory, ids: Sequence[str], *, workers: int | None = None,
                 threads: int = 1, work: Mapping[str, float] | None = None, ledger: Ledger | None = None,
                 start_method: str = "spawn") -> None:
        if len(set(ids)) != len(ids):
            raise ValueError("participant ids must be distinct")
        workers = workers if workers is not None else (os.cpu_count() or 1)
        if workers < 1 or threads < 1:
            raise ValueError(f"workers and threads must be >= 1, got {workers} and {threads}")
        self.ledger = ledger if ledger is not None else Ledger()
        self.failures = {}
        self.workers, self.threads = workers, threads
        self._factory, self._index = factory, {pid: i for i, pid in enumerate(ids)}
        self._work = {pid: float((work or {}).get(pid, 1.0)) for pid in ids}
        self._states: dict[str, State] = {}
        self._last: dict[str, int] = {}
        self._ctx = mp.get_context(start_method)
        self._procs: list = [None] * workers
        self._conns: list = [None] * workers
        for w in range(workers):
            self._start(w)
        for w in range(workers):
            self._ready(w)
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._conns)

    def _start(self, w: int) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, args=(child, self._factory, self.threads), daemon=True,
                                 name=f"cotrain-worker-{w}")
        proc.start()
        child.close()
        self._procs[w], self._conns[w] = proc, parent

    def _ready(self, w: int) -> None:
        try:
            self._conns[w].recv_bytes()
        except (EOFError, OSError) as exc:
            self._procs[w].join(timeout=5)
            _shutdown(self._procs, self._conns)
            raise RuntimeError(f"parallel worker {w} did not start (exit code {self._procs[w].exitcode}); "
                               "its traceback is above") from exc

    def participant_ids(self) -> list[str]:
        return sorted(self._index)

    def state(self, pid: str) -> State:
        """What participant ``pid``'s last :meth:`~Participant.get_state` returned (empty before its first message)."""
        return dict(self._states.get(pid, {}))

    def materialise(self, pid: str) -> Participant:
        """Participant ``pid`` built in this process with its stored state (e.g. to score an audit)."""
        participant = self._factory(self._index[pid])
        if pid in self._states:
            participant.set_state(self._states[pid])
        return participant

    def _deliver(self, messages: dict[str, Message], *, round: int) -> dict[str, Message]:
        shares = balance({pid: self._work[pid] for pid in messages}, self.workers, self._last)
        keys: dict[int, int] = {}
        distinct: dict[int, Message] = {}
        for m in messages.values():  # the same message to many participants travels once per worker
            keys.setdefault(id(m), len(keys))
            distinct[keys[id(m)]] = m
        sent = []
        for w, share in enumerate(shares):
            if not share:
                continue
            jobs = [(pid, self._index[pid], keys[id(messages[pid])], self._states.get(pid, {})) for pid in share]
            used = {key for _, _, key, _ in jobs}
            payload = pickle.dumps((jobs, {k: _compact_message(distinct[k]) for k in used}),
                                   protocol=pickle.HIGHEST_PROTOCOL)
            try:
                self._conns[w].send_bytes(payload)
                sent.append((w, share))
            except (BrokenPipeError, OSError) as exc:
                self._lost(w, share, f"worker {w} unreachable ({exc})")
        replies: dict[str, Message] = {}
        for w, share in sent:
            try:
                results = pickle.loads(self._conns[w].recv_bytes())
            except (EOFError, OSError) as exc:
                self._lost(w, share, f"worker {w} died (exit code {self._procs[w].exitcode}; {exc!r})")
                continue
            for pid, reply, state, error in results:
                self._last[pid] = w
                if error is not None:
                    self._failed[pid] = error
                    continue
                self._states[pid] = state
                replies[pid] = reply
        return replies

    def _lost(self, w: int, share: list[str], why: str) -> None:
        log.warning("%s; restarting it", why)
        for pid in share:
            self._failed[pid] = why
        self._procs[w].join(timeout=1)
        self._start(w)
        self._ready(w)

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        self._finalizer()

    def __enter__(self) -> "ParallelGrid":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shutdown(procs: list, conns: list) -> None:
    for conn in conns:
        try:
            conn.send_bytes(pickle.dumps(None))
        except (BrokenPipeError, OSError, AttributeError):
            pass
    for proc in procs:
        if proc is not None:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=1)
    for conn in conns:
        if conn is not None:
            conn.close()
