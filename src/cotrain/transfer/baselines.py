"""Reference methods the federated protocol is measured against (loops over the shared losses).

* ``train_supervised``: cross-entropy on one labelled data set. On the pooled source data it is
  **source_only** (no adaptation, no privacy); on the target's labelled training data it is
  **target_supervised** (the upper bound).
* ``fedavg_sources``: FedAvg of (G, T) over the source nodes, no adaptation: the pretraining phase
  (step 1) of :func:`~cotrain.transfer.protocol.run_fada` alone, so that FADA's gain over it is the
  adaptation's.
* ``adda_centralised``: ADDA (Tzeng et al., CVPR 2017) with all data in one place. From a source
  model (G_s, T) trained on the pooled source data, the target encoder G_t := G_s, then alternately::

      D   <- argmin  -E log sigmoid(D(G_s(x_s))) - E log(1 - sigmoid(D(G_t(x_t))))    (eq. 7, G_s, G_t fixed)
      G_t <- argmin  -E log sigmoid(D(G_t(x_t)))                                       (eq. 9, D fixed)

  and the target classifies with T(G_t(x)).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from cotrain.aggregation import Aggregator
from cotrain.data.base import ArrayDataset
from cotrain.federated.training import batch_order
from cotrain.models.blocks import BlockModel
from cotrain.runtime.inprocess import InProcessGrid
from cotrain.seeding import derive_seed, seed_torch, torch_generator
from cotrain.transfer.discriminator import DomainDiscriminator
from cotrain.transfer.losses import confusion_loss, discriminator_loss
from cotrain.transfer.nodes import LocalPhase, SourceNode, frozen
from cotrain.transfer.protocol import FadaSettings, run_fada


def pool(datasets: list[ArrayDataset]) -> ArrayDataset:
    """One labelled data set made of several (x and y concatenated): the centralised, no-privacy view."""
    if not datasets:
        raise ValueError("nothing to pool")
    return ArrayDataset(x=torch.cat([d.x for d in datasets]), y=torch.cat([d.y for d in datasets]),
                        name="+".join(d.name for d in datasets), num_classes=max(d.num_classes for d in datasets))


def train_supervised(model: BlockModel, data: ArrayDataset, phase: LocalPhase, *, seed: int,
                     tag: str = "supervised") -> BlockModel:
    """``phase.steps`` Adam steps of CE(T(G(x)), y) on ``data``; trains ``model`` in place and returns it."""
    opt = phase.build(list(model.parameters()))
    batches = batch_order(len(data), phase.batch_size, phase.steps, torch_generator(seed, tag, "batches"))
    model.train()
    with torch.random.fork_rng(devices=[]):
        seed_torch(derive_seed(seed, tag, "dropout"))
        for idx in batches:
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(data.x[idx]), data.y[idx]).backward()
            opt.step()
    return model


def fedavg_sources(model: BlockModel, discriminator: DomainDiscriminator, sources: dict[str, ArrayDataset],
                   settings: FadaSettings, *, seed: int, aggregator: Aggregator | None = None) -> BlockModel:
    """FedAvg of (G, T) over the source nodes: ``settings``' pretraining rounds, no adaptation round."""
    nodes = {sid: SourceNode(sid, model=copy.deepcopy(model), discriminator=copy.deepcopy(discriminator), data=d,
                             seed=seed) for sid, d in sources.items()}
    no_adaptation = FadaSettings(rounds=0, pretrain_rounds=settings.pretrain_rounds, pretrain=settings.pretrain)
    return run_fada(InProcessGrid(nodes), model, discriminator, no_adaptation, aggregator=aggregator, seed=seed).model


def adda_centralised(source_model: BlockModel, discriminator: DomainDiscriminator, source_x: torch.Tensor,
                     target_x: torch.Tensor, phase: LocalPhase, *, seed: int, disc_steps: int = 1) -> BlockModel:
    """ADDA's adversarial phase: returns the target model (G_t, T); ``source_model`` is left unchanged.

    Each of ``phase.steps`` iterations makes ``disc_steps`` D steps and one G_t step, each on a
    mini-batch of ``phase.batch_size`` from each domain (``source_x`` (N_s, ...), ``target_x`` (N_t, ...)).
    """
    target_model = copy.deepcopy(source_model)
    opt_d = phase.build(list(discriminator.parameters()))
    opt_g = phase.build(list(target_model.blocks.parameters()))
    n_d = phase.steps * disc_steps
    src_batches = batch_order(len(source_x), phase.batch_size, n_d, torch_generator(seed, "adda", "source"))
    tgt_batches = batch_order(len(target_x), phase.batch_size, n_d + phase.steps, torch_generator(seed, "adda", "target"))
    with torch.random.fork_rng(devices=[]), frozen(source_model):
        seed_torch(derive_seed(seed, "adda", "dropout"))
        for step in range(phase.steps):
            discriminator.train()
            for k in range(disc_steps):
                i = step * disc_steps + k
                with torch.no_grad():
                    fs = source_model.features(source_x[src_batches[i]])
                    ft = target_model.features(target_x[tgt_batches[i]])
                opt_d.zero_grad(set_to_none=True)
                discriminator_loss(discriminator(fs), discriminator(ft)).backward()
                opt_d.step()
            with frozen(discriminator):
                target_model.blocks.train()
                opt_g.zero_grad(set_to_none=True)
                ft = target_model.features(target_x[tgt_batches[n_d + step]])
                (phase.weight * confusion_loss(discriminator(ft), appear_as="source")).backward()
                opt_g.step()
    return target_model
