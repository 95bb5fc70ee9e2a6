"""Message kinds and settings of split learning (the 2023 paper "Distributed training method for
deep neural networks": one computing centre, K agents, the network cut so raw data stays with the
agents) and of federated split learning (SplitFed, Thapa et al., AAAI 2022).

Per mini-batch of B samples, with q values per sample at the cut:

* ``FORWARD``: centre -> agent, no tensors; the reply carries ``activations`` (B, *cut_shape)
  float32 (payload ACTIVATIONS) and, unless the split is U-shaped, ``labels`` (B,) int64.
* ``BACKWARD``: centre -> agent, ``gradient`` (B, *cut_shape) (payload GRADIENTS), dL/d(activations);
  the reply is an acknowledgement without tensors.
* U-shaped only, ``HEAD``: centre -> agent, ``activations`` (B, *cut2_shape) at the second cut
  (payload ACTIVATIONS); the agent runs its tail and head with its own labels and replies with
  ``gradient`` (B, *cut2_shape) (payload GRADIENTS). The centre sees neither labels nor logits.

Per agent turn (sequential) or round (SplitFed): ``BEGIN`` carries the agent-side weights down
(payload PARAMETERS) and ``END``'s reply carries them back up (payload PARAMETERS).
"""

from __future__ import annotations

from dataclasses import dataclass

BEGIN = "split_begin"
FORWARD = "split_forward"
HEAD = "split_head"
BACKWARD = "split_backward"
END = "split_end"

VARIANTS = ("sequential", "sflv1", "sflv2")


@dataclass(frozen=True)
class SplitSettings:
    """How a split-learning run trains.

    Attributes:
        variant: ``"sequential"`` (agents take turns, the front passes through the centre),
            ``"sflv1"`` (agents in parallel, one centre model per agent, both sides averaged each
            round) or ``"sflv2"`` (agents in parallel, one shared centre model).
        cut: the last agent-side block, by 1-based index or block name.
        tail_cut: U-shaped option: the last centre-side block; the blocks after it and the head
            stay with the agent, so the centre sees neither labels nor logits. None: no U.
        epochs: passes over every agent's data (one round per epoch).
        batch_size: mini-batch size B; an agent's last mini-batch of an epoch may be smaller.
        lr, momentum, weight_decay: plain SGD on both sides. Momentum buffers are not passed
            between agents, so the equivalence with centralised training needs ``momentum=0``.
    """

    variant: str = "sequential"
    cut: int | str = 1
    tail_cut: int | str | None = None
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown split variant {self.variant!r}; use one of {', '.join(VARIANTS)}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    @property
    def u_shaped(self) -> bool:
        return self.tail_cut is not None
