"""Data sets (readers for real formats, a generated default) and partitioners across participants.

>>> from cotrain.data import load_dataset, partition
>>> splits = load_dataset("synthetic", n_train=200, n_test=50)
>>> parts = partition("dirichlet", splits.train, 4, seed=0, alpha=0.5, min_size=5)
"""

from cotrain.data.base import ArrayDataset, DatasetSplits
from cotrain.data.partition import (
    available_partitioners,
    partition,
    partition_table,
    register_partitioner,
)
from cotrain.data.registry import (
    DatasetInfo,
    DatasetCorruptError,
    DatasetNotFoundError,
    available_datasets,
    dataset_names,
    load_dataset,
    register_dataset,
    resolve_data_dir,
)
from cotrain.data.synthetic import make_synthetic
from cotrain.data.transforms import map_images, resize, to_grayscale, to_rgb

__all__ = [
    "ArrayDataset",
    "DatasetInfo",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "DatasetSplits",
    "available_datasets",
    "available_partitioners",
    "dataset_names",
    "load_dataset",
    "make_synthetic",
    "map_images",
    "partition",
    "partition_table",
    "register_dataset",
    "register_partitioner",
    "resize",
    "resolve_data_dir",
    "to_grayscale",
    "to_rgb",
]
