"""Injected faults: participants that drop out, straggle, crash or send corrupt uploads, all drawn
from the root seed, for experiments and tests of the server's reliability (``[faults]``).

Faults are a participant wrapper (:class:`FaultyParticipant`, applied where a method builds its
participants, after any attack or defence), not a wrapper around the Grid, because:

* a late reply really is late (the participant sleeps ``delay_s`` before it answers), so the
  runtime's own reply timeout catches it exactly as it catches a slow device: one mechanism for
  every kind of lateness, no simulated clock that a real runtime would not share;
* a participant that drops out or has crashed does not train, so its state is what a real one's
  would be (a Grid wrapper would have to deliver and then hide the reply, or reach inside the
  runtime it wraps);
* a corrupt upload leaves the participant as an attack's does, and the server's validator has to
  catch it on its own; nothing in the runtime layer knows that a fault is played.

Every draw comes from the stream ``(seed, "faults", participant, round, n)``, ``n`` counting the
requests the participant got in that round (a round re-sent after a quorum failure asks again:
``n = 1``, ...). So whether a participant faults does not depend on who else was sampled, is the
same in every run with the same seed, and the same after a resume (rounds are checkpointed
whole, so no count of a round in progress is ever needed). The three uniform draws (drop, delay,
corrupt) are taken in that order whatever the probabilities, so raising one probability adds
faults of that kind and changes no other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping

import torch

from cotrain.behaviours.base import BehavingParticipant, BehaviourContext
from cotrain.runtime.grid import Participant
from cotrain.runtime.message import Message
from cotrain.seeding import numpy_rng

CORRUPTIONS = ("nan", "shape", "examples")
"""``nan``: one element of the first floating tensor becomes NaN; ``shape``: that tensor is sent
with one element (the broadcast trap); ``examples``: the upload claims ``HUGE_EXAMPLES`` examples."""
HUGE_EXAMPLES = 10**12


class InjectedFault(RuntimeError):
    """A participant's injected failure (dropped out, crashed): the runtime records it as failed."""


@dataclass(frozen=True)
class FaultPlan:
    """What goes wrong, and how often.

    Attributes:
        drop: probability that a participant asked in a round gives no reply.
        delay, delay_s: probability that a reply is late, and by how many seconds.
        crash_round, crashed: from round ``crash_round`` on, the participants ``crashed`` never reply.
        corrupt: probability that a reply with tensors is corrupted, in one of ``corruptions``
            (drawn uniformly; see :data:`CORRUPTIONS`).
    """

    drop: float = 0.0
    delay: float = 0.0
    delay_s: float = 0.0
    crash_round: int | None = None
    crashed: tuple[str, ...] = ()
    corrupt: float = 0.0
    corruptions: tuple[str, ...] = ("nan",)

    def __post_init__(self) -> None:
        for name in ("drop", "delay", "corrupt"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {self.delay_s}")
        unknown = sorted(set(self.corruptions) - set(CORRUPTIONS))
        if unknown or not self.corruptions:
            raise ValueError(f"corruptions must be some of {', '.join(CORRUPTIONS)}, got {list(self.corruptions)}")

    @property
    def active(self) -> bool:
        """Whether anything can go wrong at all."""
        return bool(self.drop or (self.delay and self.delay_s) or self.corrupt
                    or (self.crash_round is not None and self.crashed))


def choose_crashed(ids: list[str], fraction: float, *, seed: int) -> tuple[str, ...]:
    """``round(fraction * N)`` participants drawn from the root seed's ``("faults", "crash")`` stream, sorted."""
    k = int(round(fraction * len(ids)))
    chosen = numpy_rng(seed, "faults", "crash").choice(len(ids), size=k, replace=False) if k else []
    return tuple(sorted(ids[int(i)] for i in chosen))


class FaultyParticipant(BehavingParticipant):
    """``inner`` as it behaves under ``plan``: the same participant, but for its faults.

    ``injected`` lists the faults played in this process (``round``, ``request``, ``fault``: ``drop``,
    ``crash``, ``delay`` or ``corrupt:<kind>``), for benchmarks to check what the server saw against;
    it is no state of the participant (not checkpointed).
    """

    def __init__(self, inner: Participant, plan: FaultPlan, *, seed: int) -> None:
        super().__init__(inner, [], BehaviourContext(inner.participant_id, seed))
        self.plan, self.seed = plan, seed
        self._asked: tuple[int, int] = (0, 0)  # (round, requests in it so far); only the current round counts
        self.injected: list[dict] = []

    def handle(self, message: Message) -> Message:
        rnd = int(message.values.get("round", 0))
        n = self._asked[1] if self._asked[0] == rnd else 0
        self._asked = (rnd, n + 1)
        rng = numpy_rng(self.seed, "faults", self.participant_id, rnd, n)
        drop, delay, corrupt = (float(u) for u in rng.random(3))
        plan = self.plan
        played = lambda fault: self.injected.append({"round": rnd, "request": n, "fault": fault})  # noqa: E731
        if plan.crash_round is not None and rnd >= plan.crash_round and self.participant_id in plan.crashed:
            played("crash")
            raise InjectedFault(f"crashed in round {plan.crash_round} (injected fault)")
        if drop < plan.drop:
            played("drop")
            raise InjectedFault(f"dropped out of round {rnd} (injected fault)")
        if delay < plan.delay:
            played("delay")
            time.sleep(plan.delay_s)
        reply = self.inner.handle(message)
        if corrupt < plan.corrupt and any(t.is_floating_point() for t in reply.tensors.values()):
            how = plan.corruptions[int(rng.integers(len(plan.corruptions)))]
            played(f"corrupt:{how}")
            reply = corrupted(reply, how, rng)
        return reply


def corrupted(reply: Message, how: str, rng) -> Message:  # noqa: ANN001 (a numpy Generator)
    """``reply`` corrupted as ``how`` (one of :data:`CORRUPTIONS`); the original is left as it was."""
    tensors = {k: v.detach().clone() for k, v in reply.tensors.items()}
    values = dict(reply.values)
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    flat = tensors[name].reshape(-1)
    if how == "nan":
        flat[int(rng.integers(flat.numel()))] = float("nan")
    elif how == "shape":
        tensors[name] = flat[:1].clone() if flat.numel() > 1 else torch.cat([flat, flat])
    elif how == "examples":
        values["num_examples"] = HUGE_EXAMPLES
    else:
        raise ValueError(f"unknown corruption {how!r}; known: {', '.join(CORRUPTIONS)}")
    return Message(reply.kind, tensors=tensors, values=values, payload=reply.payload, spends=reply.spends,
                   tensor_payloads=dict(reply.tensor_payloads))


def with_faults(participants: Mapping[str, Participant], plan: FaultPlan, *, seed: int) -> dict[str, Participant]:
    """Every participant wrapped in ``plan`` (unchanged when nothing can go wrong)."""
    if not plan.active:
        return dict(participants)
    return {pid: FaultyParticipant(p, plan, seed=seed) for pid, p in participants.items()}
