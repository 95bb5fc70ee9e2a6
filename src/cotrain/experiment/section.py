"""Config sections: the registry every TOML table comes from, and the core tables.

``ExperimentConfig`` (:mod:`.config`) is assembled from :data:`SECTIONS`: the core sections below
(``[run]``, ``[data]``, ``[model]``, ``[method]``), each method's own section (registered with
``register_method(name, section=...)``) and the cross-cutting sections of
:mod:`cotrain.experiment.crosscutting` (``[aggregation]``, ``[attack]``, ``[defence]``, ``[audit]``).
Adding a method or a cross-cutting section edits no existing file.

Every section forbids unknown keys and takes values strictly (``rounds = "10"`` is a wrong type,
not a silently converted one). Names are checked against their registries when the config is built.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cotrain.registry import Registry


class Section(BaseModel):
    """A TOML table: unknown keys are errors, values are taken strictly, and floats are finite
    (TOML's ``inf`` and ``nan`` only where a field says what they mean)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)

    def check_fits(self, cfg: Any) -> None:
        """Check this section against the whole config ``cfg`` (the method, the runtime, other
        sections): a one-line :class:`~cotrain.errors.ConfigError` naming the key. Default: nothing."""


SECTIONS: Registry[type[Section]] = Registry("config section")
S = TypeVar("S", bound=type[BaseModel])


def register_section(name: str) -> Callable[[S], S]:
    """Class decorator: ``@register_section("aggregation")`` makes ``[aggregation]`` a config table."""

    def add(cls: S) -> S:
        SECTIONS.add(name, cls)  # type: ignore[arg-type]
        return cls

    return add


def check_name(kind: str, name: str, known: Callable[[], list[str]]) -> str:
    names = known()
    if name not in names:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(names) or 'none'}")
    return name


Runtime = Literal["inprocess", "parallel", "flower-simulation", "flower-deployment"]


class TlsSection(Section):
    """``[run.tls]``: PEM files of the Flower deployment's TLS (see docs/deployment.md)."""

    ca_certfile: str = Field(description="the CA certificate SuperNodes and the flwr CLI verify the SuperLink with")
    certfile: str = Field(description="the SuperLink's certificate (its SAN names the address nodes dial)")
    keyfile: str = Field(description="the SuperLink's private key")


@register_section("run")
class RunSection(Section):
    """``[run]``: naming, seeding and where the experiment runs."""

    name: str = "run"
    seed: int = Field(0, ge=0)
    output_dir: str = "runs"
    runtime: Runtime = "inprocess"
    timeout_s: float | None = Field(None, gt=0, description=(
        "Flower engines: seconds the whole run may take, start-up included; default 300 + exchanges x "
        "(60 + k x participants), k = 1 (simulation) or 10 (deployment), exchanges = rounds for FedAvg"))
    reply_timeout_s: float | None = Field(None, gt=0, description=(
        "Flower engines: seconds an exchange waits for its replies; a node silent longer is recorded as "
        "failed; default 300 + k x participants"))
    node_wait_s: float | None = Field(None, gt=0, description=(
        "Flower engines: seconds to wait for every node to connect; default 60 + 2 x participants"))
    tls: TlsSection | None = Field(None, description="flower-deployment: TLS files (off: --insecure)")
    node_keys: list[str] | None = Field(None, min_length=1, description=(
        "flower-deployment: node i's EC private key (OpenSSH format, its public key beside it as <file>.pub); "
        "only these nodes may join (needs run.tls)"))
    node_cache: bool = Field(True, description=(
        "flower-deployment: each SuperNode loads and partitions its data once (a disk cache in the run "
        "folder) instead of for every message"))
    save_model: bool = True
    threads: int | None = Field(None, ge=1, description="torch CPU threads for this run (default: torch's choice); "
                                "parallel: per worker (default: cores / workers)")
    workers: int | None = Field(None, ge=1, description="parallel: worker processes (default: the core count)")

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\:") or v in (".", ".."):
            raise ValueError("must be a plain folder name (no '/', '\\' or ':')")
        return v


def _datasets() -> list[str]:
    from cotrain.data.registry import dataset_names

    return dataset_names()


def _partitioners() -> list[str]:
    from cotrain.data import available_partitioners

    return available_partitioners()


def _models() -> list[str]:
    from cotrain.models import available_models

    return available_models()


def _methods() -> list[str]:
    from cotrain.experiment.method import METHODS

    return METHODS.names()


@register_section("data")
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
    samples_with_replacement: int | None = Field(
        None, ge=1, description="partition this many training samples drawn with replacement (a federation "
        "larger than the data set); participants then share samples")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        return check_name("data set", v, _datasets)

    @field_validator("partition")
    @classmethod
    def _known_partition(cls, v: str) -> str:
        return check_name("partitioner", v, _partitioners)


@register_section("model")
class ModelSection(Section):
    """``[model]``: a registered block model and its options (e.g. ``width``)."""

    name: str = "small_cnn"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_model(cls, v: str) -> str:
        return check_name("model", v, _models)


@register_section("method")
class MethodSection(Section):
    """``[method]``: which registered method runs; its settings are in the section of that name."""

    name: str = "fedavg"

    @field_validator("name")
    @classmethod
    def _known_method(cls, v: str) -> str:
        return check_name("method", v, _methods)


CORE_SECTIONS = ("run", "data", "model", "method")
