"""Build the parts of an experiment from its config: data, partition, model, participants.

The same functions run in the experiment process and inside Flower's client processes, so a
participant built anywhere from the same config and id is the same participant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch

from cotrain.behaviours import BehaviourSpec
from cotrain.data import load_dataset, partition
from cotrain.data.base import ArrayDataset, DatasetSplits
from cotrain.experiment.section import DataSection
from cotrain.federated.factory import FedAvgFactory
from cotrain.models import BlockModel, build_model
from cotrain.runtime.grid import Participant
from cotrain.runtime.nodecache import node_cache, node_setting
from cotrain.seeding import derive_seed, numpy_rng

if TYPE_CHECKING:
    from cotrain.experiment.config import ExperimentConfig


def participant_id(index: int) -> str:
    return f"participant-{index:03d}"


@dataclass
class ExperimentData:
    """The data of an experiment: splits, and each participant's indices into the train split."""

    splits: DatasetSplits
    parts: list[np.ndarray]

    def participant_data(self, index: int) -> ArrayDataset:
        """A copy of participant ``index``'s training data (callers may change it freely)."""
        return self.splits.train.subset(self.parts[index])


def cap(ds: ArrayDataset, n: int | None, seed: int, name: str) -> ArrayDataset:
    if n is None or n >= len(ds):
        return ds
    idx = np.sort(numpy_rng(seed, "subsample", name).choice(len(ds), size=n, replace=False))
    return ds.subset(idx)


def load_experiment_data(cfg: "ExperimentConfig") -> ExperimentData:
    """Load, subsample and partition the data named in ``cfg`` (seeded by ``cfg.run.seed``).

    Loaded once per process and data section; every caller gets its own copy of the arrays, so
    a participant that changes its data (an attack's data hook) changes nobody else's.
    """
    cached = _load_cached(json.dumps({"seed": cfg.run.seed, "data": cfg.data.model_dump(mode="json")}, sort_keys=True))
    return ExperimentData(splits=DatasetSplits(train=_copy(cached.splits.train), test=_copy(cached.splits.test)),
                          parts=[p.copy() for p in cached.parts])


def _copy(ds: ArrayDataset) -> ArrayDataset:
    return ds.subset(np.arange(len(ds)))


@lru_cache(maxsize=4)
def _load_cached(key: str) -> ExperimentData:
    raw = json.loads(key)
    d, seed = DataSection.model_validate(raw["data"]), int(raw["seed"])
    options = dict(d.options)
    if d.dataset == "synthetic":  # generated data: its seed, too, comes from the root seed
        options.setdefault("seed", derive_seed(seed, "dataset"))
    splits = load_dataset(d.dataset, data_dir=d.data_dir, **options)
    splits = DatasetSplits(train=cap(splits.train, d.max_train_samples, seed, "train"),
                           test=cap(splits.test, d.max_test_samples, seed, "test"))
    if d.samples_with_replacement is None:
        parts = partition(d.partition, splits.train, d.participants, seed=derive_seed(seed, "partition"),
                          **d.partition_options)
        return ExperimentData(splits=splits, parts=parts)
    drawn = numpy_rng(seed, "with-replacement").choice(len(splits.train), size=d.samples_with_replacement)
    parts = partition(d.partition, _keys_only(splits.train, drawn), d.participants,
                      seed=derive_seed(seed, "partition"), **d.partition_options)
    return ExperimentData(splits=splits, parts=[np.sort(drawn[p]) for p in parts])


def _keys_only(ds: ArrayDataset, idx: np.ndarray) -> ArrayDataset:
    """The samples ``idx`` of ``ds`` without their inputs: what a partitioner reads (labels, attributes,
    domains), so a resampled set larger than the data set is never materialised."""
    t = torch.as_tensor(idx)
    return ArrayDataset(x=ds.x.new_empty((len(idx), 0)), y=ds.y[t],
                        attributes={k: v[t] for k, v in ds.attributes.items()},
                        domain=None if ds.domain is None else ds.domain[t], name=ds.name, num_classes=ds.num_classes)


def node_data(cfg: "ExperimentConfig", index: int) -> ExperimentData:
    """Participant ``index``'s data as its own node holds it.

    With a node cache open (a Flower SuperNode's ``cache-dir``), the node loads and partitions the
    data set once and keeps only its own partition: later processes of the node read that back,
    as a view with this participant's samples as the train split (the others' parts empty, the
    test split empty). Without one, the whole experiment data, as in process. A node's own
    ``data-dir`` setting replaces ``data.data_dir`` (the data set lives elsewhere on each machine).
    """
    data_dir = node_setting("data-dir")
    if data_dir:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"data_dir": data_dir})})
    cache = node_cache()
    if cache is None:
        return load_experiment_data(cfg)
    key = json.dumps({"seed": cfg.run.seed, "data": cfg.data.model_dump(mode="json"), "participant": index},
                     sort_keys=True)
    entry = cache.get_or_build(key, lambda: _node_entry(load_experiment_data(cfg), index))
    local = ArrayDataset(**entry["train"])
    parts = [np.zeros(0, dtype=np.int64) for _ in range(int(entry["participants"]))]
    parts[index] = np.arange(len(local))
    return ExperimentData(splits=DatasetSplits(train=local, test=local.subset([])), parts=parts)


def _node_entry(data: ExperimentData, index: int) -> dict:
    if not 0 <= index < len(data.parts):
        raise ValueError(f"participant index {index} out of range 0..{len(data.parts) - 1}")
    local = data.participant_data(index)
    return {"train": {f.name: getattr(local, f.name) for f in fields(ArrayDataset)}, "participants": len(data.parts)}


def build_global_model(cfg: "ExperimentConfig", data: ExperimentData) -> BlockModel:
    """The initial shared model, a function of the root seed."""
    train = data.splits.train
    return build_model(cfg.model.name, input_shape=train.input_shape, num_classes=train.num_classes,
                       seed=derive_seed(cfg.run.seed, "init"), **cfg.model.options)


def build_fedavg_participant(cfg: "ExperimentConfig", index: int, data: ExperimentData | None = None,
                             behaviours: BehaviourSpec | None = None) -> Participant:
    """Participant ``index`` of a FedAvg experiment, holding its own partition only, with the run's
    attack and defences applied (built by :func:`fedavg_factory`: in process, in the parallel
    runtime's workers and in Flower's client processes alike; a Flower node reads its own partition
    from its node cache, :func:`node_data`)."""
    data = data if data is not None else node_data(cfg, index)
    if not 0 <= index < len(data.parts):
        raise ValueError(f"participant index {index} out of range 0..{len(data.parts) - 1}")
    return fedavg_factory(cfg, data, behaviours)(index)


def fedavg_factory(cfg: "ExperimentConfig", data: ExperimentData | None = None,
                   behaviours: BehaviourSpec | None = None) -> FedAvgFactory:
    """The builder of every FedAvg participant of ``cfg`` (the one place they are built)."""
    data = data if data is not None else load_experiment_data(cfg)
    spec = behaviours if behaviours is not None else run_behaviours(cfg, len(data.parts))
    return FedAvgFactory(ids=[participant_id(i) for i in range(len(data.parts))], train=data.splits.train,
                         parts=data.parts, model=cfg.model.name, seed=cfg.run.seed, behaviours=spec,
                         model_options=dict(cfg.model.options))


def run_behaviours(cfg: "ExperimentConfig", num_participants: int) -> BehaviourSpec:
    """The run's :class:`BehaviourSpec` (who is malicious, which defences) from ``[attack]``/``[defence]``."""
    from cotrain.experiment.crosscutting.behaviours import behaviour_spec

    return behaviour_spec(cfg, [participant_id(i) for i in range(num_participants)])

