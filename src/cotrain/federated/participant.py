"""The FedAvg participant: trains the global model on its own data and uploads the result."""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from cotrain.data.base import ArrayDataset
from cotrain.federated.records import EVALUATE, TRAIN, TrainInstruction, TrainResult, load_model_state, model_state
from cotrain.federated.training import OptimizerSettings, batch_order, evaluate, train_steps
from cotrain.models.blocks import BlockModel
from cotrain.runtime.grid import Participant, handler
from cotrain.runtime.message import Message, PayloadKind
from cotrain.seeding import derive_seed, seed_torch, torch_generator


class FedAvgParticipant(Participant):
    """Holds a local data set and a model of the shared architecture.

    Mini-batch order in round r comes from the stream ``(seed, "batches", participant_id, r)``, so a
    run is the same whichever runtime delivers the messages and whichever process handles them.
    The indices of the last uploaded mini-batch are kept locally (``last_batch_indices``) for the
    experiment's scoring of audits; they never leave the participant.
    """

    def __init__(self, participant_id: str, *, model_factory: Callable[[], BlockModel], train_data: ArrayDataset,
                 seed: int, test_data: ArrayDataset | None = None) -> None:
        super().__init__(participant_id)
        self.model = model_factory()
        self.train_data = train_data
        self.test_data = test_data
        self.seed = seed
        self.rounds_participated = 0
        self.last_batch_indices: torch.Tensor | None = None

    @handler(TRAIN)
    def train(self, message: Message) -> Message:
        # dropout and any other draw from torch's global generator: seeded per participant and round,
        # so a model trains the same in whichever process (and after whichever other work) it runs
        instr = TrainInstruction.from_message(message)
        with torch.random.fork_rng(devices=[]):
            seed_torch(derive_seed(self.seed, "dropout", self.participant_id, instr.round))
            return self._train(instr)

    def _train(self, instr: TrainInstruction) -> Message:
        load_model_state(self.model, instr.parameters)
        gen = torch_generator(self.seed, "batches", self.participant_id, instr.round)
        self.rounds_participated += 1
        if instr.upload == "gradient":
            return self._gradient_upload(instr, gen).to_message()
        if instr.upload != "parameters":
            raise ValueError(f"unknown upload {instr.upload!r}; use 'parameters' or 'gradient'")
        batches = batch_order(len(self.train_data), instr.batch_size, instr.local_steps, gen)
        opt = OptimizerSettings(instr.lr, instr.momentum, instr.weight_decay).build(self.model.parameters())
        loss = train_steps(self.model, self.train_data, batches, opt)
        self.last_batch_indices = batches[-1]
        return TrainResult(tensors=model_state(self.model), kind="parameters", num_examples=len(self.train_data),
                           batch_size=min(instr.batch_size, len(self.train_data)), train_loss=loss).to_message()

    def gradient_batch(self, round: int, batch_size: int) -> torch.Tensor:
        """Indices of the mini-batch a FedSGD upload of ``round`` is computed on (a function of the seed)."""
        (idx,) = batch_order(len(self.train_data), batch_size, 1,
                             torch_generator(self.seed, "batches", self.participant_id, round))
        return idx

    def _gradient_upload(self, instr: TrainInstruction, gen: torch.Generator) -> TrainResult:
        idx = self.gradient_batch(instr.round, instr.batch_size)
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(self.model(self.train_data.x[idx]), self.train_data.y[idx])
        loss.backward()
        grads = {name: p.grad.detach().clone() for name, p in self.model.named_parameters()}
        self.last_batch_indices = idx
        return TrainResult(tensors=grads, kind="gradient", num_examples=len(self.train_data),
                           batch_size=len(idx), train_loss=float(loss.detach()))

    @handler(EVALUATE)
    def evaluate(self, message: Message) -> Message:
        load_model_state(self.model, dict(message.tensors))
        data = self.test_data if self.test_data is not None else self.train_data
        metrics = evaluate(self.model, data)
        return Message(EVALUATE, payload=PayloadKind.STATISTICS,
                       values={"num_examples": len(data), **metrics})

    def get_state(self) -> dict[str, torch.Tensor]:
        state = {"rounds_participated": torch.tensor(self.rounds_participated)}
        if self.last_batch_indices is not None:
            state["last_batch_indices"] = self.last_batch_indices
        return state

    def set_state(self, state: Mapping[str, torch.Tensor]) -> None:
        if "rounds_participated" in state:
            self.rounds_participated = int(state["rounds_participated"])
        self.last_batch_indices = state.get("last_batch_indices")
