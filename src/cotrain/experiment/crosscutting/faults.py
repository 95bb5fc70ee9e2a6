"""``[faults]``: injected dropouts, stragglers, crashes and corrupt uploads, for experiments and tests.

Every fault is drawn from the root seed (:mod:`cotrain.behaviours.faults`), so a run with faults
is as reproducible as one without. Drops, crashes and late replies show up as ``failed`` in the
round records, corrupt uploads as ``rejected`` with the validator's reason. Read by FedAvg
(``uses``), on the in-process runtime only (for now): there every participant is wrapped where it
is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from cotrain.behaviours.faults import FaultPlan, choose_crashed, with_faults
from cotrain.errors import ConfigError
from cotrain.experiment.section import Section, register_section

if TYPE_CHECKING:
    from cotrain.experiment.config import ExperimentConfig
    from cotrain.runtime.grid import Participant


@register_section("faults")
class FaultsSection(Section):
    """``[faults]``: per-round probabilities of a drop, a late reply and a corrupt upload; a crash."""

    drop: float = Field(0.0, ge=0, le=1, description="probability a participant asked in a round gives no reply")
    delay: float = Field(0.0, ge=0, le=1, description="probability a reply is late by delay_s")
    delay_s: float = Field(0.0, ge=0, description="seconds a late reply is late")
    crash_round: int | None = Field(None, ge=1, description="from this round on, the crashed participants never reply")
    crash: list[str] = Field(default_factory=list, description="who crashes (participant ids)")
    crash_fraction: float = Field(0.0, ge=0, le=1, description="or: this share of participants, drawn from the seed")
    corrupt: float = Field(0.0, ge=0, le=1, description="probability an upload is corrupted")
    corruptions: list[Literal["nan", "shape", "examples"]] = Field(
        default_factory=lambda: ["nan"], min_length=1, description="how (each corrupt upload draws one)")

    @model_validator(mode="after")
    def _consistent(self) -> "FaultsSection":
        crashes = bool(self.crash) or self.crash_fraction > 0
        if self.crash and self.crash_fraction > 0:
            raise ConfigError("faults.crash: give crash (who) or crash_fraction (how many), not both", key="faults.crash")
        if crashes and self.crash_round is None:
            raise ConfigError("faults.crash_round: say from which round the crashed participants stop replying",
                              key="faults.crash_round")
        if self.crash_round is not None and not crashes:
            raise ConfigError("faults.crash_round: nobody crashes; give crash = [ids] or crash_fraction",
                              key="faults.crash_round")
        if self.delay > 0 and self.delay_s == 0:
            raise ConfigError("faults.delay_s: a late reply needs a delay in seconds (> 0)", key="faults.delay_s")
        return self

    def check_fits(self, cfg: "ExperimentConfig") -> None:
        if not (self.drop or self.delay or self.corrupt or self.crash_round is not None):
            return
        if cfg.run.runtime != "inprocess":  # (a method that does not read [faults] declines it itself)
            raise ConfigError(f"faults: injected faults work on the inprocess runtime, not {cfg.run.runtime}",
                              key="faults")
        from cotrain.experiment.setup import participant_id

        ids = {participant_id(i) for i in range(cfg.data.participants)}
        unknown = sorted(set(self.crash) - ids)
        if unknown:
            raise ConfigError(f"faults.crash: no participant {', '.join(unknown)}; they are {participant_id(0)} .. "
                              f"{participant_id(cfg.data.participants - 1)}", key="faults.crash")

    def plan(self, ids: list[str], *, seed: int = 0) -> FaultPlan:
        """The plan for a federation of ``ids`` (a ``crash_fraction`` is drawn from ``seed``)."""
        crashed = tuple(sorted(self.crash)) or (choose_crashed(ids, self.crash_fraction, seed=seed)
                                                if self.crash_fraction else ())
        return FaultPlan(drop=self.drop, delay=self.delay, delay_s=self.delay_s, crash_round=self.crash_round,
                         crashed=crashed, corrupt=self.corrupt, corruptions=tuple(self.corruptions))


def faulty_participants(cfg: "ExperimentConfig", participants: "dict[str, Participant]") -> "dict[str, Any]":
    """The run's participants under its ``[faults]`` (unchanged without any)."""
    plan = cfg.faults.plan(sorted(participants), seed=cfg.run.seed)
    return with_faults(participants, plan, seed=cfg.run.seed)
