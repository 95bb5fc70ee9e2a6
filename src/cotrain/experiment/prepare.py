"""Shared preparation of every method: data by role, config-keyed errors, runtime checks.

Methods build from these so that every method names a bad key the same way and fails before a
run folder is made. Data roles: the participants' partitions (:func:`prepare_data`), a server's
auxiliary or public data (the held-out split, :func:`server_data`), a second domain
(:func:`load_domain`).
"""

from __future__ import annotations

import importlib.util
import re
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from cotrain.data.base import ArrayDataset, DatasetSplits
from cotrain.errors import ConfigError
from cotrain.experiment.setup import ExperimentData, cap, load_experiment_data

if TYPE_CHECKING:
    from cotrain.experiment.config import ExperimentConfig

T = TypeVar("T")

DATA_ERROR_KEYS = {"partitioner": "data.partition_options", "participants": "data.participants",
                   "data set": "data.options"}
"""Which config key a data-loading error is about, by a word its message holds."""


def under_key(key: str, build: Callable[[], T], *, by_topic: dict[str, str] | None = None) -> T:
    """Run ``build``; a ``ValueError`` it raises (a value the user chose is out of range: the
    settings' own checks, an unknown name or option) becomes a :class:`ConfigError` naming ``key``
    (or ``by_topic[word]`` for the first word the message mentions). Anything else, a programming
    error, raises with its traceback; data-set-not-found errors pass through (they name the path)."""
    from cotrain.data.registry import DatasetNotFoundError

    try:
        return build()
    except (DatasetNotFoundError, ConfigError):
        raise
    except ValueError as exc:
        text = str(exc)
        key = next((k for word, k in (by_topic or {}).items() if word in text), key)
        prefix = key.split(".")[0] + ": "
        text = text[len(prefix):] if text.startswith(prefix) else text  # "audit: ..." under audit.enabled
        raise ConfigError(f"{key}: {text}", key=key) from exc
    except (MemoryError, OverflowError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and not _TOO_LARGE.search(str(exc)):
            raise
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{key}: too large to build on this machine ({first})", key=key) from exc


_TOO_LARGE = re.compile(r"memory|overflow|allocat", re.IGNORECASE)
"""Words of torch's RuntimeErrors that mean a size the user asked for cannot be built."""


def check_model_options(cfg: "ExperimentConfig") -> None:
    """Unknown ``[model] options`` keys, checked against the factory's signature before building."""
    from cotrain.models.registry import MODELS
    from cotrain.registry import check_options

    under_key("model.options", lambda: check_options(MODELS.get(cfg.model.name), dict(cfg.model.options),
                                                     f"model {cfg.model.name!r}"))


def prepare_data(cfg: "ExperimentConfig") -> ExperimentData:
    """The participants' data: load and partition ``[data]``. A bad option or an empty participant
    is a :class:`ConfigError` naming its key, missing files a ``DatasetNotFoundError`` naming the path."""
    from cotrain.data.registry import check_options, get_spec

    under_key("data.options", lambda: check_options(get_spec(cfg.data.dataset).loader, dict(cfg.data.options),
                                                    f"data set {cfg.data.dataset!r}"))
    data: ExperimentData = under_key("data", lambda: load_experiment_data(cfg), by_topic=DATA_ERROR_KEYS)
    for i, part in enumerate(data.parts):
        if len(part) == 0:
            raise ConfigError(f"data.participants: participant {i} got no training samples "
                              f"({len(data.splits.train)} samples across {cfg.data.participants}); "
                              "use fewer participants or more data", key="data.participants")
    return data


def server_data(data: ExperimentData) -> ArrayDataset:
    """The server's own data: the held-out split (evaluation, an audit's auxiliary data, a root set)."""
    return data.splits.test


def load_domain(cfg: "ExperimentConfig", key: str, name: str, options: dict[str, Any], *,
                max_train: int | None, max_test: int | None, stream: str) -> DatasetSplits:
    """A second data set (e.g. a target domain), subsampled from the root seed's ``stream``."""
    from cotrain.data import load_dataset

    splits = under_key(key, lambda: load_dataset(name, data_dir=cfg.data.data_dir, **options))
    return DatasetSplits(train=cap(splits.train, max_train, cfg.run.seed, f"{stream}-train"),
                         test=cap(splits.test, max_test, cfg.run.seed, f"{stream}-test"))


def require_flower(runtime: str) -> None:
    """:class:`ConfigError` on ``run.runtime`` when Flower is not installed."""
    if importlib.util.find_spec("flwr") is None:
        raise ConfigError(f"run.runtime: {runtime!r} needs Flower, which is not installed "
                          "(pip install 'cotrain[flower]'); or use runtime = \"inprocess\"", key="run.runtime")


def require_runtime(cfg: "ExperimentConfig", allowed: tuple[str, ...], why: str) -> None:
    """One-line :class:`ConfigError` when the method cannot use ``run.runtime``."""
    if cfg.run.runtime not in allowed:
        raise ConfigError(f"run.runtime: the {cfg.method.name} method runs on {', '.join(allowed)}, "
                          f"not {cfg.run.runtime!r}: {why}", key="run.runtime")
    if cfg.run.runtime.startswith("flower"):
        require_flower(cfg.run.runtime)
    check_deployment_files(cfg)


def check_deployment_files(cfg: "ExperimentConfig") -> None:
    """One-line :class:`ConfigError` for ``run.tls`` / ``run.node_keys`` on a runtime they do not apply
    to, or naming a missing file."""
    for key in ("tls", "node_keys"):
        if getattr(cfg.run, key) is not None and cfg.run.runtime != "flower-deployment":
            raise ConfigError(f"run.{key}: applies to runtime = \"flower-deployment\" only, not "
                              f"{cfg.run.runtime!r}", key=f"run.{key}")
    if cfg.run.runtime == "flower-deployment":
        from cotrain.experiment.flower import flower_security

        flower_security(cfg)

