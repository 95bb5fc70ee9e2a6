"""Participant behaviours: attacks and defences as wrappers around any participant.

A behaviour has two hooks:

* :meth:`Behaviour.on_data` runs once, when the participant is built, on the data it will hold
  (label flipping, a backdoor trigger);
* :meth:`Behaviour.on_reply` runs on every reply before it leaves the participant, seeing the
  request it answers (scaling or noising an update, clipping it for DP).

:func:`behave` applies both, in the one function per method that builds participants, which the
in-process runtime and the Flower client both call; so an attack changes the same participants
on every runtime. Registries: ``@register_attack("sign_flip")``, ``@register_defence("dp_client")``;
every module of ``behaviours/attacks`` and ``behaviours/defences`` is imported on first use, so a
new one is one new file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, TypeVar

import torch

from cotrain.data.base import ArrayDataset
from cotrain.registry import Registry, check_options, import_all
from cotrain.runtime.grid import Participant
from cotrain.runtime.message import Message
from cotrain.seeding import torch_generator


@dataclass(frozen=True)
class BehaviourContext:
    """What a behaviour knows of where it runs.

    Attributes:
        participant_id: the participant it wraps.
        seed: the root seed (draw with :meth:`generator`, never from global state).
        colluders: ids of every participant running the same attack (known to a colluding attacker).
        num_participants: size of the federation.
    """

    participant_id: str
    seed: int
    colluders: tuple[str, ...] = ()
    num_participants: int = 0

    def generator(self, *path: str | int) -> torch.Generator:
        return torch_generator(self.seed, "behaviour", self.participant_id, *path)


class Behaviour:
    """An attack or a defence. Options are keyword-only ``__init__`` arguments."""

    name: ClassVar[str] = ""
    role: ClassVar[str] = ""

    def on_data(self, data: ArrayDataset, context: BehaviourContext) -> ArrayDataset:
        """The data the participant will hold (default: unchanged)."""
        return data

    def on_reply(self, reply: Message, request: Message, context: BehaviourContext) -> Message:
        """What leaves the participant in answer to ``request`` (default: ``reply`` unchanged)."""
        return reply

    def bind(self, participant: Participant) -> None:
        """Called once with the participant this behaviour wraps, after it is built (default: ignored).
        An attacker that simulates honest updates replays requests through its handler."""


class BehavingParticipant(Participant):
    """``inner`` with reply hooks applied in order; everything else is the inner participant's."""

    def __init__(self, inner: Participant, behaviours: list[Behaviour], context: BehaviourContext) -> None:
        super().__init__(inner.participant_id)
        self.inner = inner
        self.behaviours = list(behaviours)
        self.context = context
        for b in self.behaviours:
            b.bind(inner)

    def handled_kinds(self) -> dict[str, str]:  # type: ignore[override]
        return self.inner.handled_kinds()

    def handle(self, message: Message) -> Message:
        reply = self.inner.handle(message)
        for b in self.behaviours:
            reply = b.on_reply(reply, message, self.context)
            if not isinstance(reply, Message):
                raise TypeError(f"behaviour {b.name!r} returned {type(reply).__name__}, not a Message")
        return reply

    def get_state(self) -> dict[str, torch.Tensor]:
        return self.inner.get_state()

    def set_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self.inner.set_state(state)

    def __getattr__(self, name: str) -> Any:  # the experiment's scorers read inner attributes
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def behave(build: Callable[[ArrayDataset], Participant], data: ArrayDataset, behaviours: list[Behaviour],
           context: BehaviourContext) -> Participant:
    """Build a participant from ``data`` after the data hooks, wrapped for the reply hooks."""
    for b in behaviours:
        data = b.on_data(data, context)
    participant = build(data)
    return BehavingParticipant(participant, behaviours, context) if behaviours else participant


# -- registries ---------------------------------------------------------------------------
def _load_attacks() -> None:
    import cotrain.behaviours.attacks as pkg

    import_all(pkg)


def _load_defences() -> None:
    import cotrain.behaviours.defences as pkg

    import_all(pkg)


ATTACKS: Registry[type[Behaviour]] = Registry("attack", loader=_load_attacks)
DEFENCES: Registry[type[Behaviour]] = Registry("defence", loader=_load_defences)
B = TypeVar("B", bound=type[Behaviour])


def _registrar(registry: Registry[type[Behaviour]], role: str) -> Callable[[str], Callable[[B], B]]:
    def register(name: str) -> Callable[[B], B]:
        def add(cls: B) -> B:
            cls.name, cls.role = name, role
            registry.add(name, cls)
            return cls

        return add

    return register


register_attack = _registrar(ATTACKS, "attack")
"""Class decorator: ``@register_attack("sign_flip")``."""
register_defence = _registrar(DEFENCES, "defence")
"""Class decorator: ``@register_defence("dp_client")``."""


def _build(registry: Registry[type[Behaviour]], name: str, options: Mapping[str, Any]) -> Behaviour:
    cls = registry.get(name)
    init = cls.__init__ if cls.__init__ is not object.__init__ else (lambda: None)
    check_options(init, dict(options), f"{registry.kind} {name!r}")
    return cls(**dict(options))


def build_attack(name: str, **options: Any) -> Behaviour:
    return _build(ATTACKS, name, options)


def build_defence(name: str, **options: Any) -> Behaviour:
    return _build(DEFENCES, name, options)


@dataclass(frozen=True)
class BehaviourSpec:
    """Which participants behave how: plain data, so a Flower job can carry it.

    ``attack`` runs on ``malicious`` participants (chosen by :func:`choose_malicious`); every
    ``defences`` entry runs on every participant, after the attack.
    """

    attack: str | None = None
    attack_options: dict[str, Any] = field(default_factory=dict)
    malicious: tuple[str, ...] = ()
    defences: tuple[tuple[str, dict[str, Any]], ...] = ()

    def for_participant(self, participant_id: str, *, seed: int,
                        num_participants: int = 0) -> tuple[list[Behaviour], BehaviourContext]:
        behaviours: list[Behaviour] = []
        if self.attack is not None and participant_id in self.malicious:
            behaviours.append(build_attack(self.attack, **self.attack_options))
        behaviours += [build_defence(name, **options) for name, options in self.defences]
        return behaviours, BehaviourContext(participant_id, seed, tuple(self.malicious), num_participants)

    def to_json(self) -> dict[str, Any]:
        return {"attack": self.attack, "attack_options": dict(self.attack_options),
                "malicious": list(self.malicious), "defences": [[n, dict(o)] for n, o in self.defences]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "BehaviourSpec":
        return cls(attack=d.get("attack"), attack_options=dict(d.get("attack_options", {})),
                   malicious=tuple(d.get("malicious", ())),
                   defences=tuple((str(n), dict(o)) for n, o in d.get("defences", ())))


def choose_malicious(ids: list[str], fraction: float, *, seed: int) -> tuple[str, ...]:
    """round(fraction * N) participants drawn from the root seed's ``"attack"`` stream, sorted."""
    from cotrain.seeding import numpy_rng

    if not 0 <= fraction <= 1:
        raise ValueError(f"attack fraction must be in [0, 1], got {fraction}")
    k = int(round(fraction * len(ids)))
    chosen = numpy_rng(seed, "attack").choice(len(ids), size=k, replace=False) if k else []
    return tuple(sorted(ids[int(i)] for i in chosen))
