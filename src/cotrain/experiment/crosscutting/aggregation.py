"""``[aggregation]``: the rule every method that aggregates uses (FedAvg, SplitFed, FADA).

``name`` is a registered aggregator (:mod:`cotrain.aggregation`), ``options`` its keyword options,
checked against the rule's signature when the config is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from cotrain.aggregation import AGGREGATORS, Aggregator, build_aggregator
from cotrain.errors import ConfigError
from cotrain.experiment.section import Section, register_section

if TYPE_CHECKING:
    from cotrain.experiment.config import ExperimentConfig


@register_section("aggregation")
class AggregationSection(Section):
    """``[aggregation]``: ``name`` (``fedavg``, ``median``, ...) and its ``options``."""

    name: str = "fedavg"
    options: dict[str, Any] = Field(default_factory=dict)
    root_samples: int = Field(100, ge=1, description="the server's clean root set, for rules that need "
                              "the server's own upload (FLTrust); taken from the held-out split, "
                              "which is then scored without them")

    @model_validator(mode="after")
    def _known(self) -> "AggregationSection":
        try:
            AGGREGATORS.check_name(self.name)
        except ValueError as exc:
            raise ConfigError(f"aggregation.name: {exc}", key="aggregation.name") from None
        try:
            build_aggregator(self.name, **self.options)  # options checked now, not in round 1
        except ValueError as exc:
            raise ConfigError(f"aggregation.options: {exc}", key="aggregation.options") from None
        return self


def run_aggregator(cfg: "ExperimentConfig") -> Aggregator:
    """A fresh aggregator for one run (rules may keep state across its rounds)."""
    return build_aggregator(cfg.aggregation.name, **cfg.aggregation.options)


def root_split(cfg: "ExperimentConfig", aggregator: Aggregator, data: Any) -> "tuple[Any, Any]":
    """(the server's clean root set, the data it scores the model on).

    Only for a rule that needs a server upload (FLTrust): ``root_samples`` drawn from the held-out
    split by the root seed's ``"root-set"`` stream; the rest of that split scores the model, so no
    test sample is also trained on. Otherwise ``(None, held-out split)``.
    """
    import numpy as np

    from cotrain.seeding import numpy_rng

    test = data.splits.test
    if not getattr(aggregator, "needs_server_upload", False):
        return None, test
    n = cfg.aggregation.root_samples
    if n >= len(test):
        raise ConfigError(f"aggregation.root_samples: {n} leaves no held-out sample to score the model "
                          f"(the held-out split has {len(test)})", key="aggregation.root_samples")
    order = numpy_rng(cfg.run.seed, "root-set").permutation(len(test))
    return test.subset(np.sort(order[:n])), test.subset(np.sort(order[n:]))


def server_root(cfg: "ExperimentConfig", aggregator: Aggregator, data: Any) -> "tuple[Any, Any]":
    """The server's FedAvg participant on its root set (FLTrust) and the data it scores the model on
    (see :func:`root_split`); ``(None, held-out split)`` for every other rule."""
    from cotrain.federated import FedAvgParticipant
    from cotrain.models import build_model

    root_data, rest = root_split(cfg, aggregator, data)
    if root_data is None:
        return None, rest
    train = data.splits.train
    root = FedAvgParticipant("server-root", model_factory=lambda: build_model(
        cfg.model.name, input_shape=train.input_shape, num_classes=train.num_classes, **cfg.model.options),
        train_data=root_data, seed=cfg.run.seed)
    return root, rest
