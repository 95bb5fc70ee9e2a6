"""The agent of split learning: holds its data and the agent side of the network.

An agent (a :class:`~cotrain.runtime.Participant`) never sends inputs x: it sends the cut-layer
activations f_{k1} o .. o f_1(x) of shape (B, *cut_shape), its labels (B,) unless the split is
U-shaped, and, once per turn or round, its side's weights. It finishes its backward pass from the
gradient (B, *cut_shape) the centre returns (the 2023 split-training paper; SplitFed, Thapa et al.,
AAAI 2022).

Between BEGIN and END an agent is mid-epoch: its side's weights, optimiser moments, batch order and
the pending mini-batch live in it. ``get_state`` returns all of that, so a runtime that rebuilds the
participant for every message (Flower's ClientApp) carries it across; the autograd graph of the
pending forward pass cannot travel, so after ``set_state`` the BACKWARD handler recomputes the front
on the same mini-batch with the same weights and dropout seed (batch-norm statistics restored), which
gives the same gradients as keeping the graph.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

import torch
from torch import nn

from cotrain.data.base import ArrayDataset
from cotrain.models.blocks import BlockModel
from cotrain.runtime.grid import Participant, handler
from cotrain.runtime.message import Message
from cotrain.seeding import derive_seed, seed_torch, torch_generator
from cotrain.split.messages import BACKWARD, BEGIN, END, FORWARD, HEAD
from cotrain.split.records import (Activations, BackwardDone, BeginInstruction, BeginReply, CutGradient, HeadReply,
                                   HeadRequest, SideUpload)
from cotrain.split.parts import side_state, split_model


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's mini-batch indices: a permutation of range(n) in chunks of ``batch_size``.

    The last chunk keeps the remainder (it may be smaller), so every sample crosses the cut once
    per epoch and p, the samples per epoch of the cost model, is the data set size.
    """
    if n == 0:
        raise ValueError("cannot train on an empty data set")
    perm = torch.randperm(n, generator=generator)
    return [perm[s:s + batch_size] for s in range(0, n, batch_size)]


def agent_batch_stream(seed: int, agent_id: str, epoch: int) -> torch.Generator:
    """The generator of ``agent_id``'s mini-batch order in ``epoch``: stream (seed, "split-batches", id, epoch)."""
    return torch_generator(seed, "split-batches", agent_id, epoch)


class SplitAgent(Participant):
    """Holds ``train_data`` and the agent side (front, and tail when U-shaped) of the model.

    ``sent_indices`` lists, in order, the indices of the samples whose activations left this agent;
    it stays here (the experiment reads it to score leakage, it never travels).
    """

    def __init__(self, participant_id: str, *, model_factory: Callable[[], BlockModel], train_data: ArrayDataset,
                 seed: int, cut: int | str, tail_cut: int | str | None = None) -> None:
        super().__init__(participant_id)
        self.side, _ = split_model(model_factory(), cut, tail_cut)
        self.u_shaped = tail_cut is not None
        self.train_data = train_data
        self.seed = seed
        self.sent_indices: list[torch.Tensor] = []
        self._batches: list[torch.Tensor] = []
        self._cursor = 0
        self._optimizer: torch.optim.Optimizer | None = None
        self._pending: torch.Tensor | None = None
        self._pending_idx: torch.Tensor | None = None
        self._loss = float("nan")
        self._epoch = 0
        self._batch_size = 0

    @property
    def batches_per_epoch(self) -> int:
        """Mini-batches of the current (or last) epoch."""
        return len(self._batches)

    @handler(BEGIN)
    def begin(self, message: Message) -> Message:
        """Load the side's weights, draw the epoch's mini-batch order, reset the optimiser."""
        t0 = time.perf_counter()
        begin = BeginInstruction.from_message(message)
        self.side.load_state_dict(begin.side, strict=True)
        self._optimizer = torch.optim.SGD(self.side.parameters(), lr=begin.lr, momentum=begin.momentum,
                                          weight_decay=begin.weight_decay)
        self._epoch, self._batch_size = begin.epoch, begin.batch_size
        self._draw_batches()
        self._cursor = 0
        self.side.train()
        return BeginReply(num_batches=len(self._batches), num_examples=len(self.train_data),
                          seconds=time.perf_counter() - t0).to_message()

    @handler(FORWARD)
    def forward(self, message: Message) -> Message:
        """Run the front on the next mini-batch; send its activations (and labels unless U-shaped)."""
        if self._optimizer is None or self._cursor >= len(self._batches):
            raise RuntimeError(f"agent {self.participant_id!r}: no mini-batch left (begin first)")
        t0 = time.perf_counter()
        idx = self._batches[self._cursor]
        self._cursor += 1
        self._optimizer.zero_grad(set_to_none=True)
        self._pending = self._front(idx)
        self._pending_idx = idx
        self.sent_indices.append(idx)
        labels = None if self.u_shaped else self.train_data.y[idx]  # a U-shaped split keeps its labels
        return Activations(self._pending, labels, seconds=time.perf_counter() - t0).to_message()

    @handler(HEAD)
    def head(self, message: Message) -> Message:
        """U-shaped: tail and head on the centre's activations with this agent's labels; return dL/d(input)."""
        if not self.u_shaped or self._pending_idx is None:
            raise RuntimeError(f"agent {self.participant_id!r}: {HEAD!r} needs a U-shaped split and a pending batch")
        t0 = time.perf_counter()
        inputs = HeadRequest.from_message(message).activations.requires_grad_(True)
        loss = nn.functional.cross_entropy(self.side["tail"](inputs), self.train_data.y[self._pending_idx])
        loss.backward()
        self._loss = float(loss.detach())
        return HeadReply(inputs.grad, self._loss, seconds=time.perf_counter() - t0).to_message()

    @handler(BACKWARD)
    def backward(self, message: Message) -> Message:
        """Finish the backward pass from the cut gradient and step the agent side."""
        if self._pending_idx is None or self._optimizer is None:
            raise RuntimeError(f"agent {self.participant_id!r}: no forward pass to finish")
        t0 = time.perf_counter()
        if self._pending is None:  # rebuilt since FORWARD (a Flower client): recompute the graph
            self._pending = self._recompute_front(self._pending_idx)
        self._pending.backward(CutGradient.from_message(message).gradient)
        self._optimizer.step()
        self._pending, self._pending_idx = None, None
        return BackwardDone(seconds=time.perf_counter() - t0, loss=self._loss if self.u_shaped else None).to_message()

    @handler(END)
    def end(self, message: Message) -> Message:
        """Upload the side's weights (for the next agent, or for averaging); the epoch is over."""
        self._optimizer, self._pending, self._pending_idx = None, None, None
        return SideUpload(side_state(self.side), num_examples=len(self.train_data)).to_message()

    def replay_order(self, epoch: int, batch_size: int) -> None:
        """Scoring only: record ``epoch``'s mini-batches as sent, without training. An evaluator that
        knows the root seed recomputes what this agent sent where it ran elsewhere (on Flower)."""
        self._epoch, self._batch_size = epoch, batch_size
        self._draw_batches()
        self.sent_indices.extend(self._batches)

    # -- the front pass ------------------------------------------------------------------
    def _draw_batches(self) -> None:
        gen = agent_batch_stream(self.seed, self.participant_id, self._epoch)
        self._batches = epoch_batches(len(self.train_data), self._batch_size, gen)

    def _front(self, idx: torch.Tensor) -> torch.Tensor:
        """The front on mini-batch ``idx`` (the cursor-th of the epoch); dropout and any other draw
        from torch's global generator seeded by (seed, agent, epoch, batch), so a recomputation (and
        a run in another process) draws the same."""
        with torch.random.fork_rng(devices=[]):
            seed_torch(derive_seed(self.seed, "split-dropout", self.participant_id, self._epoch, self._cursor))
            return self.side["front"](self.train_data.x[idx])

    def _recompute_front(self, idx: torch.Tensor) -> torch.Tensor:
        """The pending forward pass again (same weights, batch and seed), its buffers (batch-norm
        running statistics, already updated once by FORWARD) put back as they were."""
        front = self.side["front"]
        saved = [(m, {k: b.clone() for k, b in m._buffers.items() if b is not None}) for m in front.modules()]
        out = self._front(idx)  # the cursor has not moved since FORWARD: the same seed
        for module, buffers in saved:  # new tensors, not in place: the graph holds the updated ones
            module._buffers.update(buffers)
        return out

    # -- state kept between messages ----------------------------------------------------------
    def get_state(self) -> dict[str, torch.Tensor]:
        """The indices sent so far; mid-epoch (between BEGIN and END) also the side's weights and
        gradients, the optimiser's settings and moments, the epoch, batch size and cursor, the
        pending mini-batch and the last loss (see the module docstring)."""
        lengths = torch.tensor([len(i) for i in self.sent_indices], dtype=torch.long)
        sent = torch.cat(self.sent_indices) if self.sent_indices else torch.zeros(0, dtype=torch.long)
        state = {"sent_indices": sent, "sent_lengths": lengths}
        if self._optimizer is None:
            return state
        group = self._optimizer.param_groups[0]
        state.update({f"side.{k}": v.detach().clone() for k, v in self.side.state_dict().items()})
        state["round"] = torch.tensor([self._epoch, self._batch_size, self._cursor], dtype=torch.long)
        state["sgd"] = torch.tensor([group["lr"], group["momentum"], group["weight_decay"], self._loss],
                                    dtype=torch.float64)
        for name, p in self.side.named_parameters():
            if p.grad is not None:
                state[f"grad.{name}"] = p.grad.detach().clone()
            buf = self._optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                state[f"momentum.{name}"] = buf.detach().clone()
        if self._pending_idx is not None:
            state["pending"] = self._pending_idx.clone()
        return state

    def set_state(self, state: Mapping[str, torch.Tensor]) -> None:
        if "sent_indices" in state:
            self.sent_indices = list(torch.split(state["sent_indices"], state["sent_lengths"].tolist()))
        if "round" not in state:
            return
        self.side.load_state_dict({k[len("side."):]: v for k, v in state.items() if k.startswith("side.")}, strict=True)
        self._epoch, self._batch_size, self._cursor = (int(v) for v in state["round"].tolist())
        lr, momentum, weight_decay, self._loss = state["sgd"].tolist()
        self._optimizer = torch.optim.SGD(self.side.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        for name, p in self.side.named_parameters():
            if f"grad.{name}" in state:
                p.grad = state[f"grad.{name}"].clone()
            if f"momentum.{name}" in state:
                self._optimizer.state[p]["momentum_buffer"] = state[f"momentum.{name}"].clone()
        self._draw_batches()
        self.side.train()
        self._pending, self._pending_idx = None, state["pending"].clone() if "pending" in state else None
