"""Feature spaces for private-kNN labelling (ECOS downstream (c)) and the client that offers them.

Zhu, Yu, Chandraker, Wang, "Private-kNN" (CVPR 2020) vote in the features of a network trained on
labelled *public* data: a neighbourhood there is a class neighbourhood. ECOS's phi is
self-supervised (denoising) and groups images by domain more than by class, so its k-neighbour
votes are close to chance (docs/sampling.md). The spaces (registry ``KNN_FEATURES``):

* ``"phi"``: phi(x), the ECOS encoder the client already holds (nothing more goes down).
* ``"teacher"``: f(x) = E(x) / ||E(x)||_2, the penultimate features E of a classifier the cloud
  trained on its labelled open-source data (downstream (b)'s teacher), L2-normalised so the kNN's
  L2 distance is the cosine one: ||f(a) - f(b)||^2 = 2 - 2 cos(E(a), E(b)). The cloud sends the
  network down once (message kind ``KNN_NETWORK``, on the ledger with its bytes), computes f of its
  queries itself, and the client computes f of its own data.

Privacy: either map is fixed before the client's data is read (a function of public data only),
so the add/remove-one sensitivities of :mod:`cotrain.sampling.private_knn` hold unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Callable, Mapping

import torch
from torch import nn

from cotrain.errors import ConfigError
from cotrain.registry import Registry
from cotrain.runtime.grid import Grid, handler
from cotrain.runtime.message import Message
from cotrain.runtime.spend import PrivacySpend
from cotrain.sampling import records as R
from cotrain.sampling.encoder import encode
from cotrain.sampling.protocol import EcosClient
from cotrain.seeding import torch_generator

KNN_NETWORK = "ecos_knn_network"
FEATURES_OPTION = "knn_features"  # the key of the private-kNN request's options naming the space

FeatureMap = Callable[["KnnClient", torch.Tensor], torch.Tensor]
KNN_FEATURES: Registry[FeatureMap] = Registry("private-kNN feature space")


def penultimate_features(model: nn.Module, x: torch.Tensor, *, batch: int = 512) -> torch.Tensor:
    """f(x) = E(x) / ||E(x)||_2 (N, D) float32, E = ``model.features`` (a :class:`BlockModel`'s last
    block, the input of its head), in eval mode without gradients."""
    if not hasattr(model, "features"):
        raise ConfigError(f"private kNN 'teacher' features need a model with .features(x), got {type(model).__name__}")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        e = torch.cat([model.features(x[i:i + batch]).flatten(1) for i in range(0, len(x), batch)]) if len(x) \
            else torch.zeros(0, 0)
    model.train(was_training)
    return torch.nn.functional.normalize(e.float(), dim=1)


@KNN_FEATURES.register("phi")
def _phi_features(client: "KnnClient", x: torch.Tensor) -> torch.Tensor:
    if client.encoder is None:
        raise ValueError("private-kNN request in phi space before the client holds phi")
    return torch.from_numpy(encode(client.encoder, x))


@KNN_FEATURES.register("teacher")
def _teacher_features(client: "KnnClient", x: torch.Tensor) -> torch.Tensor:
    if client.knn_network is None:
        raise ValueError("private-kNN request in teacher space before the cloud sent its network")
    return penultimate_features(client.knn_network, x)


class NetworkTransfer(R.EvaluateRequest):
    """Cloud -> client: a registered zoo model (name, options, parameters) whose features the kNN
    uses; the payload of :class:`~cotrain.sampling.records.EvaluateRequest` under its own kind."""

    def to_message(self) -> Message:
        return dataclasses.replace(super().to_message(), kind=KNN_NETWORK)


class KnnClient(EcosClient):
    """An :class:`EcosClient` that also holds the cloud's feature network and labels in either space.

    The private-kNN request names the space in its options (``knn_features``, default ``"phi"``).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.knn_network: nn.Module | None = None
        self._knn_spec: dict | None = None

    def _build_network(self, spec: dict, state: Mapping[str, torch.Tensor]) -> nn.Module:
        from cotrain.models import build_model

        model = build_model(spec["model"], input_shape=self.data.input_shape, num_classes=self.data.num_classes,
                            **spec["options"])
        model.load_state_dict(dict(state))
        self._knn_spec = spec
        return model.eval()

    @handler(KNN_NETWORK)
    def on_knn_network(self, message: Message) -> Message:
        t = NetworkTransfer.from_message(message)
        self.knn_network = self._build_network({"model": t.model, "options": t.options}, t.parameters)
        return Message(KNN_NETWORK, values={"ok": True})

    @handler(R.KNN)
    def on_knn_label(self, message: Message) -> Message:
        """Downstream (c): private kNN on this client's labelled data in the requested space."""
        from cotrain.sampling.private_knn import private_knn_labels

        req = R.KnnLabelRequest.from_message(message)
        options = dict(req.options)
        space = str(options.pop(FEATURES_OPTION, "phi"))
        client_features = KNN_FEATURES.get(space)(self, self.data.x)
        spends: list[PrivacySpend] = []
        out = private_knn_labels(
            req.features, client_features, self.data.y, num_classes=self.data.num_classes, **options,
            generator=torch_generator(self.seed, "ecos", "private_knn", self.participant_id, req.round),
            party=self.participant_id, round=req.round, record=spends.append)
        answered = torch.nonzero(out.answered).flatten()
        return R.KnnLabelReply(answered=answered, labels=out.labels[answered], spends=tuple(spends)).to_message()

    def get_state(self) -> dict[str, torch.Tensor]:
        state = super().get_state()
        if self.knn_network is not None and self._knn_spec is not None:
            state.update({f"knn_network.{k}": v for k, v in self.knn_network.state_dict().items()})
            state["knn_network_spec"] = torch.tensor(list(json.dumps(self._knn_spec).encode()), dtype=torch.uint8)
        return state

    def set_state(self, state: Mapping[str, torch.Tensor]) -> None:
        super().set_state({k: v for k, v in state.items() if not k.startswith("knn_network")})
        if "knn_network_spec" in state:
            spec = json.loads(bytes(state["knn_network_spec"].tolist()).decode())
            prefix = "knn_network."
            self.knn_network = self._build_network(
                spec, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


def share_knn_network(grid: Grid, model: nn.Module, *, model_name: str, options: dict, client: str,
                      round: int) -> int:
    """Send ``model`` (a registered zoo ``model_name`` with ``options``) to ``client``; returns the
    bytes the ledger recorded for the transfer (both ways)."""
    first = len(grid.ledger.entries)
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grid.send_and_receive({client: NetworkTransfer(params, model_name, options).to_message()}, round=round)
    return sum(e.bytes for e in grid.ledger.entries[first:] if e.kind == KNN_NETWORK)
