"""What reply-time attacks share: the model update a reply carries, and benign statistics.

**The update.** A FedAvg reply to a ``"train"`` request carries new parameters ``x_k``; its update
is ``u = x_k - x_global`` with ``x_global`` the request's parameters (every floating tensor,
flattened in upload order as the aggregation package does, float64). A FedSGD reply
(``values["upload"] == "gradient"``) carries a gradient, which is the update itself. A
SplitFed ``"split_end"`` reply carries the agent side's parameters; its reference is the parameters of
the latest request that carried them (the ``"begin"``), which the attack remembers. Any other
reply (evaluation, activations, the cut-layer gradient) passes through unchanged.

**Benign statistics** (ALIE, IPM, min-max, the adaptive attacker). The papers' attacker is
omniscient: it sees every honest update of the round. Here participants run in separate
processes (Flower), so no attacker sees another's update. Each attacker instead *simulates* ``m``
honest updates of its own: its real honest reply plus ``m - 1`` replies of the wrapped
participant's own handler to copies of the request whose ``round`` is a private id
``-(1000 r + j)``, so each copy trains on a different seeded mini-batch order of the attacker's
data. The participant's state is saved before and restored after (its round counter and last
batch are as if nothing happened). This attacker is weaker than the papers': its spread reflects
mini-batch noise on one participant's data, not the spread across participants' (non-IID) data,
and its mean is biased towards its own label mix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from cotrain.aggregation.base import Layout, flatten, floating_names, unflatten
from cotrain.behaviours.base import Behaviour, BehaviourContext
from cotrain.errors import ConfigError, OptionsError
from cotrain.runtime.grid import Participant
from cotrain.runtime.message import Message, PayloadKind

# The FedAvg train and SplitFed end kinds: the protocol packages sit above behaviours, so the names are
# repeated here; tests/test_attacks.py checks them against cotrain.federated and cotrain.split.
TRAIN, END = "train", "split_end"


@dataclass
class UpdateView:
    """One reply's update as a flat float64 vector, and how to write a new one back."""

    update: torch.Tensor  # (d,) float64
    layout: Layout
    reference: dict[str, torch.Tensor] | None  # None for a gradient upload
    reply: Message
    round: int

    def replaced(self, update: torch.Tensor) -> Message:
        """The reply with ``update`` in place of its own (same kind, values, payload, spends)."""
        tensors = unflatten(update.to(torch.float64), self.layout, first=self.reply.tensors, reference=self.reference)
        r = self.reply
        return Message(r.kind, tensors=tensors, values=dict(r.values), payload=r.payload, spends=r.spends)


def update_view(reply: Message, request: Message, remembered: dict[str, torch.Tensor] | None,
                round: int) -> UpdateView | None:
    """The update of ``reply`` (see the module docstring), or None when it carries none."""
    if reply.payload == PayloadKind.GRADIENTS and request.kind == TRAIN and reply.values.get("upload") == "gradient":
        matrix, layout = flatten([reply.tensors])
        return UpdateView(matrix[0], layout, None, reply, round)
    if reply.payload != PayloadKind.PARAMETERS or reply.kind not in (TRAIN, END):
        return None
    names = floating_names(reply.tensors)
    reference = dict(request.tensors) if all(n in request.tensors for n in names) and names else remembered
    if reference is None or not all(n in reference for n in names):
        raise ConfigError(f"attack: a {reply.kind!r} reply carries parameters but no request gave their starting "
                          "point (a runtime that rebuilds the participant per message loses the remembered one)",
                          key="attack")
    matrix, layout = flatten([reply.tensors], reference=reference)
    return UpdateView(matrix[0], layout, reference, reply, round)


class UpdateAttack(Behaviour):
    """A reply-time attack on the update: subclasses implement :meth:`poison`."""

    def __init__(self) -> None:
        self._reference: dict[str, torch.Tensor] | None = None
        self._reference_round = 0
        self._participant: Participant | None = None

    def bind(self, participant: Participant) -> None:
        """Give the attack the participant it wraps (needed by attacks that simulate honest updates)."""
        self._participant = participant

    def on_reply(self, reply: Message, request: Message, context: BehaviourContext) -> Message:
        if request.payload == PayloadKind.PARAMETERS and request.tensors:
            self._reference = {k: v.detach().clone() for k, v in request.tensors.items()}
            self._reference_round = int(request.values.get("round", request.values.get("epoch", 0)))
        view = update_view(reply, request, self._reference, self._reference_round)
        if view is None:
            return reply
        return view.replaced(self.poison(view, request, context))

    def poison(self, view: UpdateView, request: Message, context: BehaviourContext) -> torch.Tensor:
        """The malicious update, (d,) float64."""
        raise NotImplementedError


class BenignEstimateAttack(UpdateAttack):
    """An update attack that needs benign statistics, estimated from ``honest_samples`` simulated updates.
    FedAvg only: a SplitFed epoch cannot be replayed (its mini-batches are exchanges with the centre)."""

    methods: ClassVar[tuple[str, ...]] = ("fedavg",)

    def __init__(self, *, honest_samples: int) -> None:
        super().__init__()
        if int(honest_samples) < 2:
            raise OptionsError(f"honest_samples must be >= 2 (a spread needs two updates), got {honest_samples}")
        self.honest_samples = int(honest_samples)

    def honest_updates(self, view: UpdateView, request: Message) -> torch.Tensor:
        """(m, d) float64: the real honest update first, then m - 1 simulated ones."""
        if self._participant is None:
            raise ConfigError(f"attack {self.name!r} simulates honest updates with the participant it wraps; "
                              "it was never bound to one (BehavingParticipant must call bind)", key="attack")
        if request.kind != TRAIN:
            raise ConfigError(f"attack {self.name!r} simulates honest updates from FedAvg 'train' requests; "
                              f"it cannot replay a {request.kind!r} exchange", key="attack")
        saved = self._participant.get_state()
        rows = [view.update]
        try:
            for j in range(1, self.honest_samples):
                values: dict[str, Any] = {**request.values, "round": -(1000 * view.round + j)}
                copy = Message(request.kind, tensors=dict(request.tensors), values=values, payload=request.payload)
                simulated = update_view(self._participant.handle(copy), request, self._reference, view.round)
                assert simulated is not None
                rows.append(simulated.update)
        finally:
            self._participant.set_state(saved)
        return torch.stack(rows)


def check_positive(name: str, value: float) -> float:
    if not float(value) > 0:
        raise OptionsError(f"{name} must be > 0, got {value}")
    return float(value)
