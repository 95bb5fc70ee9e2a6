"""Build the parts of an experiment from its config: data, partition, model, participants.

The same functions run in the experiment process and inside Flower's client processes, so a
participant built anywhere from the same config and id is the same participant.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cotrain.data import load_dataset, partition
from cotrain.data.base import ArrayDataset, DatasetSplits
from cotrain.experiment.config import ExperimentConfig
from cotrain.federated.participant import FedAvgParticipant
from cotrain.models import BlockModel, build_model
from cotrain.seeding import derive_seed, numpy_rng


def participant_id(index: int) -> str:
    return f"participant-{index:03d}"


@dataclass
class ExperimentData:
    """The data of an experiment: splits, and each participant's indices into the train split."""

    splits: DatasetSplits
    parts: list[np.ndarray]

    def participant_data(self, index: int) -> ArrayDataset:
        return self.splits.train.subset(self.parts[index])


def _cap(ds: ArrayDataset, n: int | None, seed: int, name: str) -> ArrayDataset:
    if n is None or n >= len(ds):
        return ds
    idx = np.sort(numpy_rng(seed, "subsample", name).choice(len(ds), size=n, replace=False))
    return ds.subset(idx)


def load_experiment_data(cfg: ExperimentConfig) -> ExperimentData:
    """Load, subsample and partition the data named in ``cfg`` (seeded by ``cfg.run.seed``)."""
    return _load_cached(cfg.model_dump_json(include={"run": {"seed"}, "data": True}))


@lru_cache(maxsize=4)
def _load_cached(key: str) -> ExperimentData:
    cfg = ExperimentConfig.model_validate_json(key)
    d, seed = cfg.data, cfg.run.seed
    options = dict(d.options)
    if d.dataset == "synthetic":  # generated data: its seed, too, comes from the root seed
        options.setdefault("seed", derive_seed(seed, "dataset"))
    splits = load_dataset(d.dataset, data_dir=d.data_dir, **options)
    splits = DatasetSplits(train=_cap(splits.train, d.max_train_samples, seed, "train"),
                           test=_cap(splits.test, d.max_test_samples, seed, "test"))
    parts = partition(d.partition, splits.train, d.participants, seed=derive_seed(seed, "partition"),
                      **d.partition_options)
    return ExperimentData(splits=splits, parts=parts)


def build_global_model(cfg: ExperimentConfig, data: ExperimentData) -> BlockModel:
    """The initial shared model, a function of the root seed."""
    train = data.splits.train
    return build_model(cfg.model.name, input_shape=train.input_shape, num_classes=train.num_classes,
                       seed=derive_seed(cfg.run.seed, "init"), **cfg.model.options)


def build_fedavg_participant(cfg: ExperimentConfig, index: int, data: ExperimentData | None = None) -> FedAvgParticipant:
    """Participant ``index`` of a FedAvg experiment, holding its own partition only."""
    data = data if data is not None else load_experiment_data(cfg)
    if not 0 <= index < len(data.parts):
        raise ValueError(f"participant index {index} out of range 0..{len(data.parts) - 1}")
    train = data.splits.train
    return FedAvgParticipant(
        participant_id(index),
        model_factory=lambda: build_model(cfg.model.name, input_shape=train.input_shape,
                                          num_classes=train.num_classes, **cfg.model.options),
        train_data=data.participant_data(index),
        seed=cfg.run.seed,
    )
