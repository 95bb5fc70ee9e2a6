"""Closed-form communication per epoch of split learning and of federated averaging.

The 2023 split-training paper compares, per epoch, SL: 2pq + 2 beta K |W| against FL: 2K|W|, in
values. The ledger counts bytes, so here every term is in bytes and each symbol is exact:

* p: samples that cross the cut in one epoch, summed over agents (every sample once per epoch:
  :func:`cotrain.split.agent.epoch_batches` keeps the last, smaller mini-batch);
* q: values per sample crossing the cut (``prod(cut_shape)``; for the U-shaped option, the sum over
  both cuts); s_a: bytes per value (4, float32). Activations go up and their gradients come down:
  2 p q s_a. In the U-shaped option activations and gradients cross both cuts, both ways: the same
  expression with q = q1 + q2;
* labels: the paper's formula leaves them out; the agents send them with the activations (int64,
  s_y = 8 bytes per sample), so the ledger carries p s_y more. They are a separate term here,
  ``label_bytes``, zero in the U-shaped option, where labels never leave the agent;
* |W|: bytes of the whole model's state (parameters and buffers) as a PARAMETERS message carries
  it; beta|W|: bytes of the agent side's state (front, plus tail when U-shaped), so beta is their
  ratio. Each agent receives its side once per epoch and sends it back once: 2 beta K |W|;
* K: agents. Federated averaging with one local epoch per round sends the model down to and up from
  each agent: 2K|W|.

So SL bytes = 2 p q s_a + p s_y + 2 K beta|W| and FL bytes = 2 K |W|: SL wins while
p (2 q s_a + s_y) < 2 K (1 - beta)|W|, i.e. for K above K* = p (2 q s_a + s_y) / (2 (1 - beta)|W|).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cotrain.models.blocks import BlockModel

FLOAT32_BYTES = 4
INT64_BYTES = 8


@dataclass(frozen=True)
class CommunicationModel:
    """The symbols of one set-up (data, model, cut), all exact.

    Attributes:
        samples: p, samples crossing the cut per epoch (all agents together).
        cut_values: q, values per sample at the cut (summed over both cuts when U-shaped).
        model_bytes: |W| in bytes.
        agent_side_bytes: beta|W| in bytes.
        value_bytes: s_a, bytes per activation / gradient value.
        label_bytes: s_y, bytes per label sent with the activations (0 when U-shaped).
    """

    samples: int
    cut_values: int
    model_bytes: int
    agent_side_bytes: int
    value_bytes: int = FLOAT32_BYTES
    label_bytes: int = INT64_BYTES

    @property
    def beta(self) -> float:
        return self.agent_side_bytes / self.model_bytes

    def split_bytes(self, agents: int) -> int:
        """2 p q s_a + p s_y + 2 K beta|W|: bytes per epoch of split learning (sequential, SplitFed v1 or v2)."""
        return self.activation_bytes() + self.samples * self.label_bytes + 2 * agents * self.agent_side_bytes

    def activation_bytes(self) -> int:
        """2 p q s_a: activations up and their gradients down."""
        return 2 * self.samples * self.cut_values * self.value_bytes

    def fedavg_bytes(self, agents: int) -> int:
        """2 K |W|: bytes per round (one local epoch) of federated averaging."""
        return 2 * agents * self.model_bytes

    def crossover_agents(self) -> float:
        """K* where both cost the same; split learning sends fewer bytes for K > K*."""
        side = 2 * (self.model_bytes - self.agent_side_bytes)
        if side <= 0:
            return math.inf
        return self.samples * (2 * self.cut_values * self.value_bytes + self.label_bytes) / side

    def crossover_samples(self, agents: int) -> float:
        """p* where both cost the same for K agents; split learning sends fewer bytes for p < p*."""
        return 2 * agents * (self.model_bytes - self.agent_side_bytes) / (2 * self.cut_values * self.value_bytes
                                                                           + self.label_bytes)


def method_bytes(method: str, model: CommunicationModel, agents: int) -> int:
    """The formula's bytes per epoch for a benchmark method name."""
    if method in ("sl", "sequential", "sflv1", "sflv2"):
        return model.split_bytes(agents)
    if method == "fedavg":
        return model.fedavg_bytes(agents)
    if method == "centralised":
        return 0
    raise ValueError(f"no communication formula for method {method!r}")


def communication_model(model: "BlockModel", input_shape: tuple[int, ...], samples: int, cut: int | str,
                        tail_cut: int | str | None = None) -> CommunicationModel:
    """The symbols for ``model`` cut at ``cut`` (and ``tail_cut``) with p = ``samples``."""
    from cotrain.split.parts import cut_values, split_model, state_bytes

    agent_side, _ = split_model(model, cut, tail_cut)
    return CommunicationModel(samples=samples, cut_values=cut_values(model, input_shape, cut, tail_cut),
                              model_bytes=state_bytes(model), agent_side_bytes=state_bytes(agent_side),
                              label_bytes=0 if tail_cut is not None else INT64_BYTES)
