"""``[attack]`` and ``[defence]``: participant behaviours, applied where each method builds its participants.

``[attack] name, fraction, options``: ``round(fraction * N)`` participants, drawn from the root
seed, run the registered attack. ``[defence] name, options``: every participant runs the
registered defence (client-side DP, ...), after any attack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from pydantic import Field, model_validator

from cotrain.behaviours import ATTACKS, DEFENCES, BehaviourSpec, build_attack, build_defence, choose_malicious
from cotrain.errors import ConfigError
from cotrain.experiment.section import Section, register_section

if TYPE_CHECKING:
    from cotrain.experiment.config import ExperimentConfig


def _checked(section: str, name: Callable[[], Any], options: Callable[[], Any]) -> None:
    """The name, then the options, each a :class:`ConfigError` naming its key."""
    for key, check in (("name", name), ("options", options)):
        try:
            check()
        except ValueError as exc:
            raise ConfigError(f"{section}.{key}: {exc}", key=f"{section}.{key}") from None


@register_section("attack")
class AttackSection(Section):
    """``[attack]``: ``name`` (empty: no attack), the malicious ``fraction``, the attack's ``options`` and
    optionally ``clean_run``, the clean run to measure the attack against."""

    name: str | None = None
    fraction: float = Field(0.0, ge=0, le=1)
    options: dict[str, Any] = Field(default_factory=dict)
    clean_run: str | None = Field(None, description=(
        "folder of the same experiment's finished run with no attack: the report draws its accuracy per "
        "round beside this run's and the summary gains accuracy_drop_vs_clean (cotrain.experiment.clean_run)"))

    @model_validator(mode="after")
    def _known(self) -> "AttackSection":
        if self.name is not None:
            _checked("attack", lambda: ATTACKS.check_name(str(self.name)), lambda: build_attack(str(self.name), **self.options))
        return self


@register_section("defence")
class DefenceSection(Section):
    """``[defence]``: ``name`` (empty: none) and its ``options``; applies to every participant."""

    name: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> "DefenceSection":
        if self.name is not None:
            _checked("defence", lambda: DEFENCES.check_name(str(self.name)), lambda: build_defence(str(self.name), **self.options))
        return self


def behaviour_spec(cfg: "ExperimentConfig", participant_ids: list[str]) -> BehaviourSpec:
    """Who behaves how in this run (plain data: a Flower job carries it inside the config)."""
    a, d = cfg.attack, cfg.defence
    malicious = choose_malicious(participant_ids, a.fraction, seed=cfg.run.seed) if a.name else ()
    return BehaviourSpec(attack=a.name, attack_options=dict(a.options), malicious=malicious,
                         defences=((d.name, dict(d.options)),) if d.name else ())
