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
    """A TOML table: unknown keys are errors, values are taken strictly."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


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


@register_section("run")
class RunSection(Section):
    """``[run]``: naming, seeding and where the experiment runs."""

    name: str = "run"
    seed: int = Field(0, ge=0)
    output_dir: str = "runs"
    runtime: Runtime = "inprocess"
    timeout_s: float = Field(600.0, gt=0, description="flower-deployment: seconds before giving up")
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
