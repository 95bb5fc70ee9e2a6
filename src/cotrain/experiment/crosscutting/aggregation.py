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
