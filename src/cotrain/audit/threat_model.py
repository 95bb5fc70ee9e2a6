"""What a curious server observes of one upload, and nothing more.

Threat model (the gradient audit of patent CN114287009A): an honest-but-curious server runs
FedSGD. For each participant upload it holds

* the shared model it sent out (architecture and state ``theta``),
* the uploaded gradient ``g = dL/dtheta`` of the mean cross-entropy over one mini-batch,
  named like ``model.named_parameters()``,
* the upload's metadata, in particular the batch size ``B`` (or an estimate of it),
* its own auxiliary labelled data (not the participant's).

It never holds the participant's inputs, labels, features or private attributes: those stay with
the experiment, which only uses them to score the audit (:mod:`cotrain.audit.scoring`).
:class:`ObservedUpload` is the one record the attack functions accept.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Mapping

import torch

from cotrain.federated.records import TrainResult, load_model_state, model_state
from cotrain.models.blocks import BlockModel


@dataclass
class ObservedUpload:
    """One upload as the server saw it.

    Attributes:
        model_state: the shared model's state dict as sent to the participant (``theta``).
        gradients: named gradients ``{name: dL/d theta_name}`` with the parameters' shapes.
        batch_size: ``B`` from the upload's metadata; ``None`` when it must be estimated.
        participant_id, round: where the upload came from (bookkeeping only).
    """

    model_state: dict[str, torch.Tensor]
    gradients: dict[str, torch.Tensor]
    batch_size: int | None
    participant_id: str = ""
    round: int = 0
    metadata: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_train_result(cls, result: TrainResult, model: BlockModel, *, participant_id: str = "",
                          round: int = 0) -> "ObservedUpload":
        """Build the record from a FedSGD :class:`TrainResult` and the shared model the server sent.

        ``model`` must still hold the state sent this round (observers of ``run_fedavg`` are called
        before aggregation, so it does).
        """
        if result.kind != "gradient":
            raise ValueError("the gradient audit reads gradient uploads (FedSGD, upload='gradient'); "
                             f"got a {result.kind!r} upload — use ObservedUpload.from_parameter_update")
        return cls(model_state=model_state(model), gradients={k: v.detach().clone() for k, v in result.tensors.items()},
                   batch_size=int(result.batch_size), participant_id=participant_id, round=round)

    @classmethod
    def from_parameter_update(cls, before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor],
                              model: BlockModel, *, lr: float, batch_size: int | None,
                              participant_id: str = "", round: int = 0) -> "ObservedUpload":
        """Approximate gradient ``(theta_before - theta_after) / lr`` of a one-step FedAvg upload.

        Exact for one local SGD step without momentum or weight decay; with more local steps it is
        the sum of several batches' gradients and the audit's assumptions no longer hold.
        """
        names = [n for n, _ in model.named_parameters()]
        grads = {n: (before[n] - after[n]).detach() / float(lr) for n in names}
        return cls(model_state={k: v.detach().clone() for k, v in before.items()}, gradients=grads,
                   batch_size=batch_size, participant_id=participant_id, round=round)

    def shared_model(self, architecture: BlockModel) -> BlockModel:
        """A private copy of ``architecture`` loaded with the observed state (the input is untouched)."""
        model = copy.deepcopy(architecture)
        load_model_state(model, self.model_state)
        return model


def block_parameter_names(model: BlockModel, block_index: int) -> list[str]:
    """Names (as in ``named_parameters``) of the parameters of ``model.blocks[block_index]``."""
    idx = block_index % model.num_blocks
    prefix = f"blocks.{idx}."
    return [n for n, _ in model.named_parameters() if n.startswith(prefix)]


def head_parameter_names(model: BlockModel) -> list[str]:
    return [n for n, _ in model.named_parameters() if n.startswith("head.")]


class UploadRecorder:
    """A ``run_fedavg`` observer that keeps the uploads of chosen participants and rounds.

    ``recorder = UploadRecorder(rounds={1, 10}); run_fedavg(..., observers=[recorder])`` then
    ``recorder.uploads`` holds :class:`ObservedUpload` records. Only what the server received is kept.
    """

    def __init__(self, *, rounds: set[int] | None = None, participants: set[str] | None = None) -> None:
        self.rounds = rounds
        self.participants = participants
        self.uploads: list[ObservedUpload] = []

    def __call__(self, round: int, results: Mapping[str, TrainResult], model: BlockModel) -> None:
        if self.rounds is not None and round not in self.rounds:
            return
        for pid, result in results.items():
            if self.participants is not None and pid not in self.participants:
                continue
            if result.kind == "gradient":
                self.uploads.append(ObservedUpload.from_train_result(result, model, participant_id=pid, round=round))


def simulate_upload(model: BlockModel, x: torch.Tensor, y: torch.Tensor, *, participant_id: str = "",
                    round: int = 0) -> ObservedUpload:
    """Experiment side: the FedSGD upload a participant holding ``(x, y)`` would send for ``model``.

    Same computation as :class:`~cotrain.federated.FedAvgParticipant` with ``upload="gradient"``
    (train mode, mean cross-entropy); ``model`` is left unchanged.
    """
    net = copy.deepcopy(model)
    net.train()
    net.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(net(x), y).backward()
    grads = {n: p.grad.detach().clone() for n, p in net.named_parameters()}
    return ObservedUpload(model_state=model_state(model), gradients=grads, batch_size=len(y),
                          participant_id=participant_id, round=round)
