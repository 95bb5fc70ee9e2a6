"""Source nodes and the target node of federated adversarial domain adaptation.

The patent "Model training method and computing node based on federated transfer learning"
(claims 1-15) has three kinds of computing node: source nodes with labelled data, a target node
with unlabelled data, and optionally an aggregator. Each node keeps a feature extractor G (the
``blocks`` of a :class:`~cotrain.models.BlockModel`), a task model T (its ``head``) and a domain
discriminator D (:class:`~cotrain.transfer.discriminator.DomainDiscriminator`). Only parameters
of G, T and D ever cross, named ``"G.<name>"``, ``"T.<name>"``, ``"D.<name>"``.

Local work of each node (B = batch size, F = feature size, K = classes):

* source, pretrain (step 1): min_{G_s,T_s} CE(T_s(G_s(x_s)), y_s)
* source, discriminator (step 3): G_s, T_s frozen; min_{D_s} -log sigmoid(D_s(G_s(x_s)))
* source, adapt (step 5): D_all frozen; min_{G_s,T_s} CE(T_s(G_s(x_s)), y_s) + lambda * L_conf(D_all(G_s(x_s)), "target")
* target, discriminator (step 3): G frozen; min_{D_t} -log(1 - sigmoid(D_t(G(x_t))))
* target, own encoder (optional, ADDA's target step): D_all, T frozen;
  min_{G_t} L_conf(D_all(G_t(x_t)), "source") [+ CE(T(G_t(x_l)), y_l) on the target's few labels]

A source node is a :class:`~cotrain.runtime.Participant`. The target's logic is the plain class
:class:`TargetNode`: it runs inside the server when the target aggregates, and behind the
:class:`TargetParticipant` handlers when a separate aggregator is the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from cotrain.data.base import ArrayDataset
from cotrain.federated.training import batch_order
from cotrain.models.blocks import BlockModel
from cotrain.runtime.grid import Participant, handler
from cotrain.runtime.message import Message, PayloadKind
from cotrain.seeding import derive_seed, seed_torch, torch_generator
from cotrain.transfer.discriminator import DomainDiscriminator
from cotrain.transfer.optimizers import PhaseOptimizers
from cotrain.transfer.losses import adversarial_task_loss, confusion_loss, discriminator_loss

PRETRAIN = "fada.pretrain"
DISCRIMINATOR = "fada.discriminator"
ADAPT = "fada.adapt"
TARGET_DISCRIMINATOR = "fada.target_discriminator"
TARGET_ENCODER = "fada.target_encoder"


# -- parameters in messages -------------------------------------------------------------------
def pack(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<prefix>.<name>": tensor}`` for every entry of ``module``'s state dict, detached copies."""
    return {f"{prefix}.{k}": v.detach().clone() for k, v in module.state_dict().items()}


def unpack(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``tensors`` under ``prefix``, with the prefix removed."""
    head = prefix + "."
    return {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}


def load(module: nn.Module, tensors: Mapping[str, torch.Tensor], prefix: str) -> None:
    """Load ``module`` from the ``prefix`` entries of ``tensors`` (all of them must be there)."""
    state = unpack(tensors, prefix)
    missing = set(module.state_dict()) - set(state)
    if missing:
        raise KeyError(f"message lacks {prefix} parameters {sorted(missing)[:5]}")
    module.load_state_dict(state, strict=True)


@dataclass(frozen=True)
class LocalPhase:
    """How a node runs one local phase: ``steps`` optimiser steps on mini-batches of ``batch_size``.

    ``optimizer`` is ``"adam"`` (betas ``beta1``, ``beta2``) or ``"sgd"`` (``beta1`` is its momentum).
    ``weight`` is lambda, the weight of the confusion loss (adaptation phases only).

    The discriminator phase of the federated protocol wants ``"sgd"``: each node holds one domain,
    so on the last layer every source gradient has one sign and every target gradient the other;
    Adam's normalised first steps (about ``-lr * sign(g)``) then cancel in the average and D_all learns
    nothing, while SGD's steps are proportional to the gradients and their average is a step on
    the pooled loss of ADDA eq. 7.
    """

    steps: int
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weight: float = 1.0
    optimizer: str = "adam"

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"need steps >= 0, batch_size >= 1, lr > 0; got {self}")

    def build(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        """A fresh optimiser of this phase's kind over ``params``."""
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.beta1)
        return torch.optim.Adam(params, lr=self.lr, betas=(self.beta1, self.beta2))

    def to_values(self, round: int) -> dict[str, Any]:
        return {"round": int(round), "steps": self.steps, "batch_size": self.batch_size, "lr": self.lr,
                "beta1": self.beta1, "beta2": self.beta2, "weight": self.weight, "optimizer": self.optimizer}

    @classmethod
    def from_values(cls, v: Mapping[str, Any]) -> "LocalPhase":
        return cls(steps=int(v["steps"]), batch_size=int(v["batch_size"]), lr=float(v["lr"]),
                   beta1=float(v["beta1"]), beta2=float(v["beta2"]), weight=float(v.get("weight", 1.0)),
                   optimizer=str(v.get("optimizer", "adam")))


class frozen:
    """Context: ``modules`` in eval mode with ``requires_grad=False``; restored on exit."""

    def __init__(self, *modules: nn.Module) -> None:
        self.modules = modules
        self._saved: list[tuple[nn.Module, bool, list[bool]]] = []

    def __enter__(self) -> "frozen":
        for m in self.modules:
            self._saved.append((m, m.training, [p.requires_grad for p in m.parameters()]))
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
        return self

    def __exit__(self, *exc: object) -> None:
        for m, training, flags in self._saved:
            m.train(training)
            for p, flag in zip(m.parameters(), flags):
                p.requires_grad_(flag)
        self._saved.clear()


def _batches(n: int, phase: LocalPhase, seed: int, *path: str | int) -> Iterator[torch.Tensor]:
    """Mini-batch indices of one local phase, from the stream ``(seed, "fada", *path)``.

    The global torch generator (dropout) is re-seeded from the same path for the phase and restored
    afterwards, so a node's work is a function of the seed alone, whichever party runs it.
    """
    batches = batch_order(n, phase.batch_size, phase.steps, torch_generator(seed, "fada", *path))
    with torch.random.fork_rng(devices=[]):
        seed_torch(derive_seed(seed, "fada-dropout", *path))
        yield from batches


def _features(model: BlockModel, x: torch.Tensor) -> torch.Tensor:
    return model.features(x)


# -- source node ------------------------------------------------------------------------------
class SourceNode(Participant):
    """A source node: labelled data ``data`` (x (N, ...), y (N,)), its G_s, T_s (``model``) and D_s.

    It never receives target data: its handlers take parameters of G, T, D and plain values only.
    """

    def __init__(self, participant_id: str, *, model: BlockModel, discriminator: DomainDiscriminator,
                 data: ArrayDataset, seed: int) -> None:
        super().__init__(participant_id)
        if len(data) == 0:
            raise ValueError(f"source {participant_id!r} has no data")
        self.model = model
        self.discriminator = discriminator
        self.data = data
        self.seed = int(seed)
        self._opt = PhaseOptimizers()

    def _reply(self, kind: str, tensors: dict[str, torch.Tensor], loss: float) -> Message:
        return Message(kind, tensors=tensors, payload=PayloadKind.PARAMETERS,
                       values={"num_examples": len(self.data), "loss": loss})

    @handler(PRETRAIN)
    def pretrain(self, message: Message) -> Message:
        """Step 1: load the broadcast G, T; train them on the labelled data; upload G_s, T_s."""
        phase, rnd = LocalPhase.from_values(message.values), int(message.values["round"])
        load(self.model.blocks, message.tensors, "G")
        load(self.model.head, message.tensors, "T")
        opt = self._opt.get("pretrain", list(self.model.parameters()), phase)
        self.model.train()
        total = 0.0
        for idx in _batches(len(self.data), phase, self.seed, self.participant_id, "pretrain", rnd):
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(self.model(self.data.x[idx]), self.data.y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach())
        opt.zero_grad(set_to_none=True)
        return self._reply(PRETRAIN, {**pack("G", self.model.blocks), **pack("T", self.model.head)},
                           total / max(phase.steps, 1))

    @handler(DISCRIMINATOR)
    def train_discriminator(self, message: Message) -> Message:
        """Step 3: D_s := D_all; train D_s on its own features (label "source"), G_s and T_s frozen."""
        phase, rnd = LocalPhase.from_values(message.values), int(message.values["round"])
        load(self.discriminator, message.tensors, "D")
        opt = self._opt.get("discriminator", list(self.discriminator.parameters()), phase)
        self.discriminator.train()
        total = 0.0
        with frozen(self.model):
            ex = int(message.values.get("exchange", 0))
            for idx in _batches(len(self.data), phase, self.seed, self.participant_id, "discriminator", rnd, ex):
                with torch.no_grad():
                    f = _features(self.model, self.data.x[idx])
                opt.zero_grad(set_to_none=True)
                loss = discriminator_loss(source_logits=self.discriminator(f))
                loss.backward()
                opt.step()
                total += float(loss.detach())
        opt.zero_grad(set_to_none=True)
        return self._reply(DISCRIMINATOR, pack("D", self.discriminator), total / max(phase.steps, 1))

    @handler(ADAPT)
    def adapt(self, message: Message) -> Message:
        """Step 5: D := D_all held fixed; retrain G_s, T_s on task loss + confusion loss toward "target".

        When the message also carries G and T (the aggregates), the node starts from them.
        """
        phase, rnd = LocalPhase.from_values(message.values), int(message.values["round"])
        load(self.discriminator, message.tensors, "D")
        if any(k.startswith("G.") for k in message.tensors):
            load(self.model.blocks, message.tensors, "G")
            load(self.model.head, message.tensors, "T")
        opt = self._opt.get("adapt", list(self.model.parameters()), phase)
        self.model.train()
        total = 0.0
        with frozen(self.discriminator):
            for idx in _batches(len(self.data), phase, self.seed, self.participant_id, "adapt", rnd):
                opt.zero_grad(set_to_none=True)
                f = _features(self.model, self.data.x[idx])
                loss = adversarial_task_loss(self.model.head(f), self.data.y[idx], self.discriminator(f),
                                             weight=phase.weight, appear_as="target")
                loss.backward()
                opt.step()
                total += float(loss.detach())
        opt.zero_grad(set_to_none=True)
        return self._reply(ADAPT, {**pack("G", self.model.blocks), **pack("T", self.model.head)},
                           total / max(phase.steps, 1))

    def get_state(self) -> dict[str, torch.Tensor]:
        """Local models and optimiser moments, kept between messages (never sent)."""
        return {**pack("G", self.model.blocks), **pack("T", self.model.head), **pack("D", self.discriminator),
                **self._opt.state()}

    def set_state(self, state: Mapping[str, torch.Tensor]) -> None:
        if state:
            load(self.model.blocks, state, "G")
            load(self.model.head, state, "T")
            load(self.discriminator, state, "D")
            self._opt.load(state)


# -- target node ------------------------------------------------------------------------------
class TargetNode:
    """The target node's local logic: unlabelled inputs ``x`` (N, ...), optionally a few labels.

    ``labels`` (M,) with ``labelled_index`` (M,) give labels of ``x[labelled_index]``; without them
    the node holds no label at all. ``model`` supplies G (and the architecture of T); ``discriminator`` D_t.
    """

    node_id = "target"

    def __init__(self, x: torch.Tensor, *, model: BlockModel, discriminator: DomainDiscriminator, seed: int,
                 labels: torch.Tensor | None = None, labelled_index: torch.Tensor | None = None) -> None:
        if x.shape[0] == 0:
            raise ValueError("the target node has no data")
        if (labels is None) != (labelled_index is None):
            raise ValueError("give both labels and labelled_index, or neither")
        if labels is not None and labels.shape[0] != labelled_index.shape[0]:  # type: ignore[union-attr]
            raise ValueError("labels and labelled_index differ in length")
        self.x = x
        self.labels = labels
        self.labelled_index = labelled_index
        self.model = model
        self.discriminator = discriminator
        self.seed = int(seed)
        self.has_own_encoder = False
        self._opt = PhaseOptimizers()

    @property
    def num_examples(self) -> int:
        return int(self.x.shape[0])

    def set_encoder(self, g_state: Mapping[str, torch.Tensor]) -> None:
        """Step 2: take the aggregate G (names without prefix) as the target's G."""
        self.model.blocks.load_state_dict(dict(g_state), strict=True)

    def train_discriminator(self, d_state: Mapping[str, torch.Tensor], phase: LocalPhase, round: int,
                            exchange: int = 0) -> dict[str, torch.Tensor]:
        """Step 3: D_t := D_all; train on the target's features (label "target") with G frozen."""
        self.discriminator.load_state_dict(dict(d_state), strict=True)
        opt = self._opt.get("discriminator", list(self.discriminator.parameters()), phase)
        self.discriminator.train()
        with frozen(self.model):
            for idx in _batches(self.num_examples, phase, self.seed, self.node_id, "discriminator", round, exchange):
                with torch.no_grad():
                    f = _features(self.model, self.x[idx])
                opt.zero_grad(set_to_none=True)
                discriminator_loss(target_logits=self.discriminator(f)).backward()
                opt.step()
        opt.zero_grad(set_to_none=True)
        return {k: v.detach().clone() for k, v in self.discriminator.state_dict().items()}

    def train_encoder(self, d_state: Mapping[str, torch.Tensor], t_state: Mapping[str, torch.Tensor],
                      phase: LocalPhase, round: int) -> dict[str, torch.Tensor]:
        """ADDA's target step on the target's own G (D_all and T fixed): features made to look "source".

        With labels, ``CE(T(G(x_l)), y_l)`` on a batch of the labelled examples is added.
        """
        self.discriminator.load_state_dict(dict(d_state), strict=True)
        self.model.head.load_state_dict(dict(t_state), strict=True)
        opt = self._opt.get("encoder", list(self.model.blocks.parameters()), phase)
        self.model.blocks.train()
        label_gen = torch_generator(self.seed, "fada", self.node_id, "labelled", round)
        with frozen(self.discriminator, self.model.head):
            for idx in _batches(self.num_examples, phase, self.seed, self.node_id, "encoder", round):
                opt.zero_grad(set_to_none=True)
                loss = phase.weight * confusion_loss(self.discriminator(_features(self.model, self.x[idx])),
                                                     appear_as="source")
                if self.labels is not None:
                    pick = torch.randint(len(self.labels), (min(phase.batch_size, len(self.labels)),),
                                         generator=label_gen)
                    xl = self.x[self.labelled_index[pick]]  # type: ignore[index]
                    loss = loss + nn.functional.cross_entropy(self.model(xl), self.labels[pick])
                loss.backward()
                opt.step()
        opt.zero_grad(set_to_none=True)
        self.has_own_encoder = True
        return {k: v.detach().clone() for k, v in self.model.blocks.state_dict().items()}

    def get_state(self) -> dict[str, torch.Tensor]:
        """The target's G, T, D, whether it has trained its own G, and optimiser moments (never sent)."""
        return {**pack("G", self.model.blocks), **pack("T", self.model.head), **pack("D", self.discriminator),
                "has_own_encoder": torch.tensor(self.has_own_encoder), **self._opt.state()}

    def set_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore what :meth:`get_state` returned (empty: nothing to restore)."""
        if state:
            load(self.model.blocks, state, "G")
            load(self.model.head, state, "T")
            load(self.discriminator, state, "D")
            self.has_own_encoder = bool(state["has_own_encoder"])
            self._opt.load(state)


class TargetParticipant(Participant):
    """The target node behind handlers, for the topology where a separate aggregator is the server."""

    def __init__(self, node: TargetNode, participant_id: str = "target") -> None:
        super().__init__(participant_id)
        self.node = node

    @handler(TARGET_DISCRIMINATOR)
    def train_discriminator(self, message: Message) -> Message:
        """Steps 2-3 at the target: take the aggregate G, train D_t; reply D_t."""
        rnd = int(message.values["round"])
        self.node.set_encoder(unpack(message.tensors, "G"))
        d = self.node.train_discriminator(unpack(message.tensors, "D"), LocalPhase.from_values(message.values), rnd,
                                          exchange=int(message.values.get("exchange", 0)))
        return Message(TARGET_DISCRIMINATOR, tensors={f"D.{k}": v for k, v in d.items()},
                       payload=PayloadKind.PARAMETERS, values={"num_examples": self.node.num_examples})

    @handler(TARGET_ENCODER)
    def train_encoder(self, message: Message) -> Message:
        """The target's own-encoder step against D_all and T; reply its G."""
        rnd = int(message.values["round"])
        g = self.node.train_encoder(unpack(message.tensors, "D"), unpack(message.tensors, "T"),
                                    LocalPhase.from_values(message.values), rnd)
        return Message(TARGET_ENCODER, tensors={f"G.{k}": v for k, v in g.items()},
                       payload=PayloadKind.PARAMETERS, values={"num_examples": self.node.num_examples})

    def get_state(self) -> dict[str, torch.Tensor]:
        return self.node.get_state()

    def set_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self.node.set_state(state)
