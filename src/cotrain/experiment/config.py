"""Experiment files: a TOML config validated with pydantic, assembled from registered sections.

:class:`ExperimentConfig` has one field per registered section (:mod:`.section`): the core
``[run]``, ``[data]``, ``[model]``, ``[method]``, each method's own section and the cross-cutting
ones (``[aggregation]``, ``[attack]``, ``[defence]``, ``[audit]``). A section the chosen method does
not read (another method's, or a cross-cutting one it ignores) is an error when it is set away from
its defaults, rather than silently ignored. A typo is an error that names the key, never a silent
default.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Mapping

import tomli_w
from pydantic import Field, ValidationError, create_model, model_validator

import cotrain.experiment.crosscutting as _crosscutting
from cotrain.errors import ConfigError
from cotrain.experiment.errors import format_validation_error
from cotrain.experiment.method import METHODS
from cotrain.experiment.section import CORE_SECTIONS, SECTIONS, Section
from cotrain.registry import import_all


class _ConfigBase(Section):
    """Checks across sections."""

    @model_validator(mode="after")
    def _fits_together(self) -> Any:
        fedavg = getattr(self, "fedavg", None)
        k = getattr(fedavg, "participants_per_round", None)
        if k is not None and k > self.data.participants:  # type: ignore[attr-defined]
            raise ConfigError(f"fedavg.participants_per_round: must be <= data.participants "
                              f"({self.data.participants}) (got {k})", key="fedavg.participants_per_round")  # type: ignore[attr-defined]
        _check_methods(self)
        for name in SECTIONS.names():
            getattr(self, name).check_fits(self)
        audit = getattr(self, "audit", None)
        if audit is not None and audit.enabled:
            if self.method.name != "fedavg":  # type: ignore[attr-defined]
                raise ConfigError(f"audit.enabled: the gradient audit reads FedSGD uploads; the "
                                  f"{self.method.name} method has none", key="audit.enabled")  # type: ignore[attr-defined]
            late = [r for r in audit.rounds if r > self.fedavg.rounds]  # type: ignore[attr-defined]
            if late:
                raise ConfigError(f"audit.rounds: {late} after the last round ({self.fedavg.rounds}); "  # type: ignore[attr-defined]
                                  "no upload would be audited", key="audit.rounds")
        _check_sections_apply(self)
        return self


def _check_methods(cfg: Any) -> None:
    """A rule or behaviour that declares the methods it works with (``methods = (...)``) is refused
    elsewhere, rather than silently doing nothing there."""
    from cotrain.aggregation import AGGREGATORS
    from cotrain.behaviours import ATTACKS, DEFENCES

    method = cfg.method.name
    for key, registry, name in (("aggregation.name", AGGREGATORS, cfg.aggregation.name),
                                ("attack.name", ATTACKS, cfg.attack.name), ("defence.name", DEFENCES, cfg.defence.name)):
        allowed = getattr(registry.get(name), "methods", None) if name else None
        if allowed is not None and method not in allowed:
            raise ConfigError(f"{key}: {name!r} works with the {', '.join(allowed)} method(s), not {method!r}", key=key)


def _check_sections_apply(cfg: Any) -> None:
    """A section that the chosen method never reads must not hold settings: they would be ignored.
    (Left at its defaults it is harmless; a resolved config.toml has every section.)"""
    method = METHODS.get(cfg.method.name)
    applies = set(CORE_SECTIONS) | {method.name, "privacy", *method.uses}
    for name in SECTIONS.names():
        if name in applies or getattr(cfg, name) == SECTIONS.get(name)():
            continue
        raise ConfigError(f"{name}: the {method.name} method does not read [{name}], so its settings would be "
                          f"ignored; remove the section or change method.name", key=name)


def _assemble() -> type[Section]:
    METHODS.names()  # imports every method module: each registers its section
    import_all(_crosscutting)
    names = list(CORE_SECTIONS) + [n for n in SECTIONS.names() if n not in CORE_SECTIONS]
    fields: dict[str, Any] = {}
    for name in names:
        cls = SECTIONS.get(name)
        fields[name] = (cls, Field(default_factory=cls))
    model = create_model("ExperimentConfig", __base__=_ConfigBase, **fields)
    model.__doc__ = "The whole experiment: one field per registered section."
    return model


ExperimentConfig: Any = _assemble()


# -- building, reading, writing -------------------------------------------------------------
def config_from_dict(data: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a nested mapping (a parsed TOML file); :class:`ConfigError` on the first problem."""
    try:
        return ExperimentConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise format_validation_error(exc, ExperimentConfig) from None


def parse_config(text: str, *, source: str = "<config>") -> ExperimentConfig:
    """Parse and validate TOML text. A syntax error names ``source`` and the line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: TOML syntax error: {exc}") from None
    return config_from_dict(data)


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate the TOML experiment file at ``path``.

    Raises:
        ConfigError: one line naming the file (missing, unreadable, bad syntax with its line) or
            the dotted key that is wrong and what is allowed there.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from None
    return parse_config(text, source=str(p))


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """Plain data of ``cfg`` with every default filled in; keys whose value is None are left out
    (TOML has no null; reading the file back gives None for them again)."""
    return cfg.model_dump(mode="json", exclude_none=True)


def config_to_toml(cfg: ExperimentConfig, *, header: str = "") -> str:
    """``cfg`` as TOML text that :func:`parse_config` reads back to an equal config."""
    lines = [f"# {line}" for line in header.splitlines()]
    return ("\n".join(lines) + "\n\n" if lines else "") + tomli_w.dumps(config_to_dict(cfg))


def save_config(cfg: ExperimentConfig, path: str | Path, *, header: str = "") -> Path:
    """Write the resolved config to ``path`` (see :func:`config_to_toml`)."""
    p = Path(path)
    p.write_text(config_to_toml(cfg, header=header), encoding="utf-8")
    return p


# -- overrides ------------------------------------------------------------------------------
def parse_override(text: str) -> tuple[str, Any]:
    """``"fedavg.rounds=1"`` -> ``("fedavg.rounds", 1)``. The value is read as a TOML value; a
    bare word that is not one (``data.dataset=mnist``) is taken as a string."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. fedavg.rounds=1")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def with_overrides(cfg: ExperimentConfig, overrides: Mapping[str, Any]) -> ExperimentConfig:
    """A copy of ``cfg`` with dotted keys (``{"fedavg.rounds": 1}``) replaced, validated again."""
    data = cfg.model_dump(mode="python")
    for key, value in overrides.items():
        parts = key.split(".")
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part) if isinstance(node, dict) else None
            if nxt is None and isinstance(node, dict) and i >= 1:  # inside an options table
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"{'.'.join(parts[:i + 1])}: not a section, cannot set {key}", key=key)
            node = nxt
        node[parts[-1]] = value
    return config_from_dict(data)


def demo_config(*, quick: bool = False) -> ExperimentConfig:
    """What ``cotrain demo`` runs: FedAvg of a small CNN across 10 participants on generated data.

    ``quick`` shrinks it to a few seconds (for smoke tests); the full demo aims at test accuracy
    >= 0.90 in well under a minute on two CPU cores.
    """
    if quick:
        return config_from_dict({
            "run": {"name": "demo"},
            "data": {"participants": 3, "max_train_samples": 300, "max_test_samples": 200},
            "model": {"name": "small_cnn", "options": {"width": 4}},
            "fedavg": {"rounds": 2, "local_steps": 2, "batch_size": 16},
        })
    return config_from_dict({
        "run": {"name": "demo", "threads": 1},  # small convolutions: one thread is fastest, and never oversubscribes
        "data": {"participants": 10, "options": {"n_train": 5000, "n_test": 1000, "num_domains": 1}},
        "model": {"name": "small_cnn", "options": {"width": 8, "norm": "batch"}},
        "fedavg": {"rounds": 5, "local_steps": 20, "batch_size": 32, "lr": 0.02, "momentum": 0.9},
    })
