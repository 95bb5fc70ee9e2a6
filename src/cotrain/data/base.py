"""The in-memory data set every reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class ArrayDataset:
    """Samples held as tensors.

    Attributes:
        x: inputs, float32, shape (N, C, H, W) for images and spectrograms, (N, D) for vectors.
        y: task labels, int64, shape (N,).
        attributes: private attributes, each int64 of shape (N,). Kept for scoring audits only:
            no protocol message ever carries them.
        domain: int64 domain (style) index per sample, shape (N,), or None.
        name: data set name, e.g. ``"mnist"``.
        num_classes: number of task classes.
        class_names / attribute_names: optional human-readable names.
    """

    x: torch.Tensor
    y: torch.Tensor
    attributes: dict[str, torch.Tensor] = field(default_factory=dict)
    domain: torch.Tensor | None = None
    name: str = "dataset"
    num_classes: int = 0
    class_names: list[str] | None = None
    attribute_values: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.y)
        if self.x.shape[0] != n:
            raise ValueError(f"{self.name}: x has {self.x.shape[0]} samples but y has {n}")
        for k, v in self.attributes.items():
            if v.shape[0] != n:
                raise ValueError(f"{self.name}: attribute {k!r} has {v.shape[0]} values, expected {n}")
        if self.domain is not None and self.domain.shape[0] != n:
            raise ValueError(f"{self.name}: domain has {self.domain.shape[0]} values, expected {n}")
        if self.num_classes == 0 and n > 0:
            self.num_classes = int(self.y.max()) + 1

    def __len__(self) -> int:
        return len(self.y)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def subset(self, indices: np.ndarray | torch.Tensor | list[int]) -> "ArrayDataset":
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ArrayDataset(
            x=self.x[idx],
            y=self.y[idx],
            attributes={k: v[idx] for k, v in self.attributes.items()},
            domain=None if self.domain is None else self.domain[idx],
            name=self.name,
            num_classes=self.num_classes,
            class_names=self.class_names,
            attribute_values=self.attribute_values,
        )


@dataclass
class DatasetSplits:
    """Train and test splits of one data set."""

    train: ArrayDataset
    test: ArrayDataset
