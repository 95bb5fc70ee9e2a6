"""Sequential split learning and SplitFed v1 / v2, on the centre's side, against a :class:`Grid`.

* sequential (the 2023 split-training paper): agents take turns in id order; each turn the centre
  sends the agent side's weights down (beta|W| bytes), the agent trains one epoch of its data
  mini-batch by mini-batch with the centre, and sends the weights back up (beta|W|).
* ``sflv1`` (SplitFed v1, Thapa et al., AAAI 2022): all agents start a round from the same weights
  and train in parallel, each against its own copy of the centre side; at the end of the round
  both sides are averaged with weights n_k (FedAvg).
* ``sflv2``: agents in parallel, one shared centre model which processes the agents' mini-batches
  of each step in a seeded random order; the agent sides are averaged each round.

``model`` is the centre's view of the whole model (the relayed or averaged agent side plus its own
side); it is updated in place and is what ``evaluate`` scores.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from cotrain.aggregation import Aggregator, Upload, build_aggregator, weighted_mean
from cotrain.federated.checkpoint import NO_CHECKPOINT, RoundHook
from cotrain.models.blocks import BlockModel
from cotrain.runtime.grid import Grid, Participant
from cotrain.runtime.message import Message
from cotrain.seeding import derive_seed, torch_generator
from cotrain.split.centre import CentreSide, Observer
from cotrain.split.messages import SplitSettings
from cotrain.split.records import (Activations, BackwardDone, BeginInstruction, BeginReply, CutGradient, EndRequest,
                                   ForwardRequest, HeadReply, HeadRequest, SideUpload)
from cotrain.split.parts import side_state, split_model


@dataclass
class EpochRecord:
    """One epoch (= one round) as the centre saw it.

    ``critical_path_seconds`` estimates the epoch's duration with every agent on its own machine and
    no network delay: per mini-batch step, the slowest agent's forward, the centre's compute, the
    slowest agent's backward (all measured), summed over steps; for sequential training every
    agent's time adds up.
    """

    epoch: int
    test_accuracy: float
    test_loss: float
    train_loss: float
    seconds: float
    critical_path_seconds: float
    bytes: int
    bytes_up: int
    bytes_down: int
    aggregation: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return dict(self.__dict__)


Evaluator = Callable[[BlockModel], dict[str, float]]


class _Epoch:
    """Bookkeeping of one epoch: losses and the critical path."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.critical = 0.0
        self.aggregation: dict = {}

    def agents(self, replies: dict[str, Any], parallel: bool) -> None:
        """Add the agents' measured seconds (any reply record with ``seconds``) to the critical path."""
        times = [r.seconds for r in replies.values()]
        self.critical += (max(times) if parallel else sum(times)) if times else 0.0


def run_split(grid: Grid, model: BlockModel, settings: SplitSettings, *, seed: int,
              evaluate: Evaluator | None = None, on_epoch: Callable[[EpochRecord], None] | None = None,
              observers: list[Observer] | None = None, aggregator: Aggregator | None = None,
              root: Participant | None = None, checkpoint: RoundHook = NO_CHECKPOINT) -> list[EpochRecord]:
    """Train for ``settings.epochs`` epochs; ledger round r is epoch r.

    The agents must have been built with the same architecture, ``cut`` and ``tail_cut``.
    ``aggregator`` (default ``build_aggregator("fedavg")``) combines the agents' uploaded agent sides
    in the parallel variants (reference: the agent side they started the round from); the centre
    keeps its own side. Sequential training relays one agent's weights to the next: nothing to aggregate.
    ``root`` is the centre's own agent on its clean root set (FLTrust): when the rule needs a server
    upload, the centre trains it off the grid each round (see :func:`root_upload`).
    ``checkpoint`` is told each finished epoch's state (the centre's optimiser moments among it).
    """
    aggregator = aggregator if aggregator is not None else build_aggregator("fedavg")
    if getattr(aggregator, "needs_server_upload", False) and settings.variant != "sequential":
        if root is None:
            raise ValueError(f"aggregator {aggregator.name!r} needs the server's own upload: give run_split a root")
        if settings.u_shaped:
            raise ValueError(f"aggregator {aggregator.name!r}: a U-shaped centre has no head to train a root upload")
    agent_side, centre_module = split_model(model, settings.cut, settings.tail_cut)
    shared = CentreSide(centre_module, lr=settings.lr, momentum=settings.momentum,
                        weight_decay=settings.weight_decay, u_shaped=settings.u_shaped)
    ids = grid.participant_ids()
    if not ids:
        raise RuntimeError("no agents are connected")
    parts = {"model": model, "aggregator": aggregator, "centre_optimizer": shared.optimizer,
             "observers": list(observers or [])}
    saved = checkpoint.resume(parts)
    history: list[EpochRecord] = [EpochRecord(**r) for r in saved["history"]] if saved else []
    for epoch in range(len(history) + 1, settings.epochs + 1):
        t0 = time.perf_counter()
        up0, down0 = grid.ledger.total_bytes(direction="up"), grid.ledger.total_bytes(direction="down")
        centre0 = shared.seconds
        book = _Epoch()
        if settings.variant == "sequential":
            for pid in ids:
                _round(grid, [pid], {pid: shared}, agent_side, settings, epoch, book, observers, parallel=False)
            extra = 0.0
        elif settings.variant == "sflv2":
            _round(grid, ids, {pid: shared for pid in ids}, agent_side, settings, epoch, book, observers,
                   parallel=True, order_seed=seed, aggregator=aggregator, seed=seed, root=root)
            extra = 0.0
        else:
            copies = {pid: CentreSide(copy.deepcopy(centre_module), lr=settings.lr, momentum=settings.momentum,
                                      weight_decay=settings.weight_decay, u_shaped=settings.u_shaped) for pid in ids}
            weights = _round(grid, ids, copies, agent_side, settings, epoch, book, observers, parallel=True,
                             aggregator=aggregator, seed=seed, root=root)
            merged = weighted_mean([side_state(copies[p].module) for p in ids], [weights[p] for p in ids])
            centre_module.load_state_dict(merged, strict=True)
            extra = sum(c.seconds for c in copies.values())
        book.critical += shared.seconds - centre0 + extra
        metrics = evaluate(model) if evaluate is not None else {}
        up, down = grid.ledger.total_bytes(direction="up") - up0, grid.ledger.total_bytes(direction="down") - down0
        record = EpochRecord(
            epoch=epoch, test_accuracy=float(metrics.get("accuracy", float("nan"))),
            test_loss=float(metrics.get("loss", float("nan"))),
            train_loss=sum(book.losses) / max(len(book.losses), 1), seconds=time.perf_counter() - t0,
            critical_path_seconds=book.critical, bytes=up + down, bytes_up=up, bytes_down=down,
            aggregation=book.aggregation)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        checkpoint.round_done(epoch, parts, lambda: {"history": [r.to_json() for r in history]})
    return history


def _round(grid: Grid, pids: list[str], centres: dict[str, CentreSide], agent_side: torch.nn.Module,
           settings: SplitSettings, epoch: int, book: _Epoch, observers: list[Observer] | None, *,
           parallel: bool, order_seed: int | None = None, aggregator: Aggregator | None = None,
           seed: int = 0, root: Participant | None = None) -> dict[str, int]:
    """BEGIN, every mini-batch step, END for ``pids`` (one agent's turn, or a parallel round).

    Loads the new agent side into ``agent_side`` (the relayed weights, or their n_k-weighted mean)
    and returns n_k by agent.
    """
    begin = BeginInstruction(side_state(agent_side), epoch=epoch, batch_size=settings.batch_size, lr=settings.lr,
                             momentum=settings.momentum, weight_decay=settings.weight_decay)
    message = begin.to_message()
    server_upload = None
    if getattr(aggregator, "needs_server_upload", False):  # run_split checked the root; before the centre side moves
        assert root is not None
        server_upload = root_upload(root, message, centres[pids[0]].module, settings, epoch)
    replies = {pid: BeginReply.from_message(m)
               for pid, m in grid.send_and_receive({pid: message for pid in pids}, round=epoch).items()}
    book.agents(replies, parallel)
    num_batches = {pid: replies[pid].num_batches for pid in pids}
    gen = torch_generator(order_seed, "sflv2-order", epoch) if order_seed is not None else None
    for step in range(max(num_batches.values())):
        active = [pid for pid in pids if step < num_batches[pid]]
        if gen is not None:
            active = [active[i] for i in torch.randperm(len(active), generator=gen).tolist()]
        _step(grid, active, centres, settings, epoch, book, observers, parallel)
    end = EndRequest().to_message()
    ends = {pid: SideUpload.from_message(m)
            for pid, m in grid.send_and_receive({pid: end for pid in pids}, round=epoch).items()}
    weights = {pid: ends[pid].num_examples for pid in pids}
    if aggregator is None:  # a sequential turn: the agent's weights are relayed as they are
        (only,) = pids
        agent_side.load_state_dict(ends[only].side, strict=True)
        return weights
    uploads = [Upload(pid, ends[pid].side, weight=weights[pid]) for pid in pids]
    outcome = aggregator(uploads, round=epoch, reference=dict(begin.side), seed=derive_seed(seed, "aggregation", epoch),
                         server_upload=server_upload)
    for spend in outcome.spends:
        grid.ledger.record_privacy(spend)
    book.aggregation = outcome.to_json()
    agent_side.load_state_dict(outcome.tensors, strict=True)
    return weights


def root_upload(root: Participant, begin: Message, centre_module: torch.nn.Module, settings: SplitSettings,
                epoch: int) -> dict[str, torch.Tensor]:
    """FLTrust's server upload on SplitFed: the centre's own agent ``root`` (a split agent on the root
    set) trains one epoch of its data from the round's agent side, as every agent does, against a
    *copy* of the centre side as the round begins (the real centre side never sees the root set);
    its END upload is the server's upload. Off the grid: nothing crosses, nothing is on the ledger.
    """
    centre = CentreSide(copy.deepcopy(centre_module), lr=settings.lr, momentum=settings.momentum,
                        weight_decay=settings.weight_decay)
    reply = BeginReply.from_message(root.handle(begin.detached()))
    for _ in range(reply.num_batches):
        forward = Activations.from_message(root.handle(ForwardRequest(epoch).to_message()))
        gradient, _ = centre.step(forward.activations, forward.labels)
        root.handle(CutGradient(gradient).to_message())
    return SideUpload.from_message(root.handle(EndRequest().to_message())).side


def _step(grid: Grid, active: list[str], centres: dict[str, CentreSide], settings: SplitSettings, epoch: int,
          book: _Epoch, observers: list[Observer] | None, parallel: bool) -> None:
    """One mini-batch of every active agent, the centre serving them in the order of ``active``."""
    request = ForwardRequest(epoch).to_message()
    forwards = {pid: Activations.from_message(m)
                for pid, m in grid.send_and_receive({pid: request for pid in active}, round=epoch).items()}
    book.agents(forwards, parallel)
    gradients: dict[str, torch.Tensor] = {}
    for pid in active:
        acts = forwards[pid].activations
        for observe in observers or []:
            observe(pid, epoch, acts)
        if not settings.u_shaped:
            gradients[pid], loss = centres[pid].step(acts, forwards[pid].labels)
            book.losses.append(loss)
            continue
        # U-shaped: one agent at a time, so that a shared middle is stepped between agents.
        out = centres[pid].forward_middle(acts)
        reply = grid.send_and_receive({pid: HeadRequest(out).to_message()}, round=epoch)
        head = {pid: HeadReply.from_message(reply[pid])}
        book.agents(head, parallel=False)
        book.losses.append(head[pid].loss)
        gradients[pid] = centres[pid].backward_middle(head[pid].gradient)
    backs = {pid: BackwardDone.from_message(m) for pid, m in grid.send_and_receive(
        {pid: CutGradient(gradients[pid]).to_message() for pid in active}, round=epoch).items()}
    book.agents(backs, parallel)
