"""Building the parties of one FADA run from data sets: source nodes, the target node, the grid.

The patent "Model training method and computing node based on federated transfer learning" names
two topologies: aggregation at the target node, or at a separate aggregator. Both are built here on
the in-process runtime; :func:`~cotrain.transfer.protocol.run_fada` runs either.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from cotrain.data.base import ArrayDataset
from cotrain.models.blocks import BlockModel
from cotrain.runtime.inprocess import InProcessGrid
from cotrain.runtime.ledger import Ledger
from cotrain.transfer.discriminator import DomainDiscriminator
from cotrain.transfer.nodes import SourceNode, TargetNode, TargetParticipant
from cotrain.transfer.protocol import FadaResult, FadaSettings, run_fada

TOPOLOGIES = ("target", "aggregator")


@dataclass
class Federation:
    """The grid (sources, and the target when a separate aggregator is the server) and the target node."""

    grid: InProcessGrid
    target: TargetNode
    topology: str
    sources: dict[str, SourceNode]
    seed: int = 0

    def run(self, model: BlockModel, discriminator: DomainDiscriminator, settings: FadaSettings,
            **kwargs: object) -> FadaResult:
        """:func:`run_fada` with this federation's target in the role its topology gives it."""
        local_target = self.target if self.topology == "target" else None
        kwargs.setdefault("seed", self.seed)
        return run_fada(self.grid, model, discriminator, settings, target=local_target, **kwargs)  # type: ignore[arg-type]


def build_federation(model: BlockModel, discriminator: DomainDiscriminator, sources: dict[str, ArrayDataset],
                     target_x: torch.Tensor, *, topology: str, seed: int, target_labels: torch.Tensor | None = None,
                     target_labelled_index: torch.Tensor | None = None, ledger: Ledger | None = None) -> Federation:
    """Source nodes (each a copy of ``model`` and ``discriminator``, its labelled data set) and the target
    node (inputs ``target_x`` only, plus ``target_labels`` of ``target_x[target_labelled_index]`` if given)."""
    if topology not in TOPOLOGIES:
        raise ValueError(f"topology must be one of {TOPOLOGIES}, got {topology!r}")
    if "target" in sources:
        raise ValueError("'target' is the target node's id; name the sources otherwise")
    nodes = {sid: SourceNode(sid, model=copy.deepcopy(model), discriminator=copy.deepcopy(discriminator),
                             data=data, seed=seed) for sid, data in sources.items()}
    target = TargetNode(target_x, model=copy.deepcopy(model), discriminator=copy.deepcopy(discriminator), seed=seed,
                        labels=target_labels, labelled_index=target_labelled_index)
    participants: dict = dict(nodes)
    if topology == "aggregator":
        participants["target"] = TargetParticipant(target)
    return Federation(InProcessGrid(participants, ledger=ledger), target, topology, nodes, seed)
