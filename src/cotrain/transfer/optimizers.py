"""One optimiser per local phase of a node, kept across rounds, and carried as state between messages.

Flower's deployment engine (and its simulation engine, as cotrain's client runs it) builds the
participant afresh for every message; a node's optimiser moments (Adam's m and v) must then
travel in ``Participant.get_state()`` for a run to equal the in-process run, where the node object
lives on. They are state, never a message: they stay on the node's side.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Mapping

import torch
from torch import nn

if TYPE_CHECKING:
    from cotrain.transfer.nodes import LocalPhase

_PREFIX = "opt."


def _key_tensor(key: "LocalPhase") -> torch.Tensor:
    return torch.tensor([key.batch_size, key.lr, key.beta1, key.beta2, float(key.optimizer == "adam")],
                        dtype=torch.float64)


class PhaseOptimizers:
    """The phase's optimiser; a new one when the phase's settings (other than steps and weight) change."""

    def __init__(self) -> None:
        self._opts: dict[str, tuple["LocalPhase", torch.optim.Optimizer]] = {}
        self._pending: dict[str, tuple[torch.Tensor, dict[int, dict[str, torch.Tensor]]]] = {}

    def get(self, name: str, params: list[nn.Parameter], phase: "LocalPhase") -> torch.optim.Optimizer:
        key = replace(phase, steps=0, weight=0.0)
        if name not in self._opts or self._opts[name][0] != key:
            opt = phase.build(params)
            pending = self._pending.pop(name, None)
            if pending is not None and torch.equal(pending[0], _key_tensor(key)):
                opt.load_state_dict({"state": pending[1], "param_groups": opt.state_dict()["param_groups"]})
            self._opts[name] = (key, opt)
        return self._opts[name][1]

    def state(self) -> dict[str, torch.Tensor]:
        """Every optimiser's state tensors, named ``opt.<phase>.<param index>.<key>``, and its settings."""
        out: dict[str, torch.Tensor] = {}
        for name, (key_t, moments) in self._pending.items():  # restored but not used since: still state
            out[f"{_PREFIX}{name}.key"] = key_t
            for idx, st in moments.items():
                for k, v in st.items():
                    out[f"{_PREFIX}{name}.{idx}.{k}"] = v
        for name, (key, opt) in self._opts.items():
            out[f"{_PREFIX}{name}.key"] = _key_tensor(key)
            for idx, st in opt.state_dict()["state"].items():
                for k, v in st.items():
                    out[f"{_PREFIX}{name}.{idx}.{k}"] = (v if isinstance(v, torch.Tensor) else torch.tensor(v)).clone()
        return out

    def load(self, state: Mapping[str, torch.Tensor]) -> None:
        """Keep what :meth:`state` gave; each optimiser takes its part when its phase next runs."""
        for full, v in state.items():
            if not full.startswith(_PREFIX):
                continue
            name, rest = full[len(_PREFIX):].split(".", 1)
            key_t, moments = self._pending.setdefault(name, (torch.empty(0), {}))
            if rest == "key":
                self._pending[name] = (v, moments)
            else:
                idx, k = rest.split(".", 1)
                moments.setdefault(int(idx), {})[k] = v
