"""Experiment files: a TOML config validated with pydantic.

Every section forbids unknown keys and takes values strictly (``rounds = "10"`` is a wrong type,
not a silently converted one), so a typo is an error that names the key, not a silent default.
Names (method, model, data set, partitioner, aggregator) are checked against their registries
when the config is built, before any data is loaded or any training starts.

Method sections (``[fedavg]``, and those later methods add as fields of
:class:`ExperimentConfig`) are looked up by ``[method] name``; sections of methods that are not
selected may be present and are validated too.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cotrain.experiment.errors import ConfigError, format_validation_error
from cotrain.experiment.audit_hook import AuditSection
from cotrain.experiment.fada_method import FadaSection
from cotrain.experiment.split_method import SplitSection

Runtime = Literal["inprocess", "flower-simulation", "flower-deployment"]


def _check_name(kind: str, name: str, known: Callable[[], list[str]]) -> str:
    names = known()
    if name not in names:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(names) or 'none'}")
    return name


def _known_methods() -> list[str]:
    from cotrain.experiment.methods import available_methods

    return available_methods()


def _known_models() -> list[str]:
    from cotrain.models import available_models

    return available_models()


def _known_datasets() -> list[str]:
    from cotrain.data.registry import dataset_names

    return dataset_names()


def _known_partitioners() -> list[str]:
    from cotrain.data import available_partitioners

    return available_partitioners()


def _known_aggregators() -> list[str]:
    from cotrain.federated.aggregation import available_aggregators

    return available_aggregators()


class Section(BaseModel):
    """A TOML table: unknown keys are errors, values are taken strictly."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


class RunSection(Section):
    """``[run]``: naming, seeding and where the experiment runs."""

    name: str = "run"
    seed: int = Field(0, ge=0)
    output_dir: str = "runs"
    runtime: Runtime = "inprocess"
    timeout_s: float = Field(600.0, gt=0, description="flower-deployment: seconds before giving up")
    save_model: bool = True
    threads: int | None = Field(None, ge=1, description="torch CPU threads for this run (default: torch's choice)")

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\:") or v in (".", ".."):
            raise ValueError("must be a plain folder name (no '/', '\\' or ':')")
        return v


class DataSection(Section):
    """``[data]``: which data set, how much of it, and how it is split across participants."""

    dataset: str = "synthetic"
    data_dir: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    participants: int = Field(10, ge=1)
    partition: str = "iid"
    partition_options: dict[str, Any] = Field(default_factory=dict)
    max_train_samples: int | None = Field(None, ge=1)
    max_test_samples: int | None = Field(None, ge=1)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        return _check_name("data set", v, _known_datasets)

    @field_validator("partition")
    @classmethod
    def _known_partition(cls, v: str) -> str:
        return _check_name("partitioner", v, _known_partitioners)


class ModelSection(Section):
    """``[model]``: a registered block model and its options (e.g. ``width``)."""

    name: str = "small_cnn"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_model(cls, v: str) -> str:
        return _check_name("model", v, _known_models)


class MethodSection(Section):
    """``[method]``: which registered method runs; its settings are in the section of that name."""

    name: str = "fedavg"

    @field_validator("name")
    @classmethod
    def _known_method(cls, v: str) -> str:
        return _check_name("method", v, _known_methods)


class FedAvgSection(Section):
    """``[fedavg]``: FedAvg (``upload = "parameters"``) or FedSGD (``upload = "gradient"``)."""

    rounds: int = Field(10, ge=1)
    fraction: float = Field(1.0, gt=0, le=1)
    participants_per_round: int | None = Field(None, ge=1)
    local_steps: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    upload: Literal["parameters", "gradient"] = "parameters"
    server_lr: float = Field(1.0, gt=0)
    aggregator: str = "fedavg"

    @field_validator("aggregator")
    @classmethod
    def _known_aggregator(cls, v: str) -> str:
        return _check_name("aggregator", v, _known_aggregators)


class ExperimentConfig(Section):
    """The whole experiment. Sections of methods that are not selected may be present and are validated."""

    run: RunSection = Field(default_factory=RunSection)
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection = Field(default_factory=ModelSection)
    method: MethodSection = Field(default_factory=MethodSection)
    fedavg: FedAvgSection = Field(default_factory=FedAvgSection)
    split: SplitSection = Field(default_factory=SplitSection)
    fada: FadaSection = Field(default_factory=FadaSection)
    audit: AuditSection = Field(default_factory=AuditSection)

    @model_validator(mode="after")
    def _fits_together(self) -> "ExperimentConfig":
        k = self.fedavg.participants_per_round
        if k is not None and k > self.data.participants:
            raise ConfigError(f"fedavg.participants_per_round: must be <= data.participants "
                              f"({self.data.participants}) (got {k})", key="fedavg.participants_per_round")
        return self


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
