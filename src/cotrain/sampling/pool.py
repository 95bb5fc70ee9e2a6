"""The digits open-source pool of ECOS (Hong, Lyu, Zhou, Spranger, NeurIPS 2022, digits protocol).

One digit domain is the client's. Its train split is cut in two at random: ``client_fraction`` of it
stays with the client (``client_train``, labelled) and the rest goes to the pool; its test split is
the client's too (``client_test``), so no pool image is a client test image. The pool also holds
the train split of every other digit domain (MNIST, USPS, MNIST-M and scikit-learn's bundled 8x8
digits, whole) and out-of-distribution images (CIFAR-10 jpg, dSprites, UTKFace, Olivetti), whose
hidden label is -1. Every image is brought to (3, size, size) in [0, 1]: gray repeated over three
channels, bilinear (antialiased when shrinking) resize.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cotrain.data import load_dataset, resize, to_rgb
from cotrain.data.base import ArrayDataset
from cotrain.errors import ConfigError
from cotrain.seeding import numpy_rng

CLIENT_DOMAINS = ("mnist", "usps", "mnist_m")
DIGIT_SOURCES = ("mnist", "usps", "mnist_m", "sklearn_digits")
OOD_SOURCES = ("cifar10", "dsprites", "utkface", "olivetti")
SOURCE_NAMES = DIGIT_SOURCES + OOD_SOURCES


@dataclass
class DigitsPool:
    """A client's data and the cloud's pool.

    Attributes:
        client_train / client_test: the client's labelled train half and its test split, x float32
            (N, 3, size, size) in [0, 1], y int64 digits.
        pool_x: float32 (M, 3, size, size) in [0, 1].
        pool_y: int64 (M,), the hidden digit label (for the benchmark's labeller), -1 for OOD images.
        pool_source: int64 (M,), index into ``source_names`` of each pool image.
        pool_index: int64 (M,), each pool image's index in its source's train split (provenance).
        source_names: the sources, ``SOURCE_NAMES`` order.
        client_domain: the client's digit domain.
    """

    client_train: ArrayDataset
    client_test: ArrayDataset
    pool_x: torch.Tensor
    pool_y: torch.Tensor
    pool_source: torch.Tensor
    pool_index: torch.Tensor
    source_names: list[str]
    client_domain: str

    @property
    def in_domain(self) -> torch.Tensor:
        """bool (M,): the pool images from the client's own domain."""
        return self.pool_source == self.source_names.index(self.client_domain)


def _image_size(x: torch.Tensor, size: int) -> torch.Tensor:
    return resize(to_rgb(x.float()), size).clamp(0.0, 1.0).contiguous()


def _train_test(data_dir: str | Path | None, name: str) -> tuple[ArrayDataset, ArrayDataset | None]:
    """A source's train split (and test split; None for scikit-learn's digits, which has none)."""
    if name == "sklearn_digits":
        from sklearn.datasets import load_digits

        d = load_digits()  # bundled with scikit-learn: 1,797 images 8x8, values 0..16
        x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.tensor(d.target, dtype=torch.int64)
        return ArrayDataset(x=x, y=y, name=name, num_classes=10), None
    splits = load_dataset(name, data_dir=data_dir)
    return splits.train, splits.test


def _cap(n: int, cap: int | None, seed: int, *stream: str) -> np.ndarray:
    if cap is None or cap >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(numpy_rng(seed, "pool", "cap", *stream).choice(n, size=cap, replace=False))


def build_digits_pool(
    data_dir: str | Path | None,
    client_domain: str,
    *,
    seed: int,
    size: int = 32,
    client_fraction: float = 0.5,
    max_per_source: int | None = None,
    max_client_train: int | None = None,
    max_client_test: int | None = None,
) -> DigitsPool:
    """Build the client's data and the pool for ``client_domain`` (one of ``CLIENT_DOMAINS``).

    The client/pool cut of the client domain's train split is drawn from stream
    ``("pool", "split", client_domain)`` before any cap, so the caps never change which half an
    image is in. ``max_per_source`` keeps a seeded subset of each pool source (the client domain's
    pool half included); ``max_client_train`` / ``max_client_test`` cap the client's sets. None: no cap.
    """
    if client_domain not in CLIENT_DOMAINS:
        raise ConfigError(f"client_domain must be one of {CLIENT_DOMAINS}, got {client_domain!r}")
    if not 0.0 < client_fraction < 1.0:
        raise ConfigError(f"client_fraction must be in (0, 1), got {client_fraction}")
    xs, ys, srcs, ids = [], [], [], []
    client_train = client_test = None
    for s, name in enumerate(SOURCE_NAMES):
        train, test = _train_test(data_dir, name)
        x, y = train.x, train.y
        if name == client_domain:
            perm = numpy_rng(seed, "pool", "split", name).permutation(len(y))
            cut = int(round(client_fraction * len(y)))
            mine, rest = np.sort(perm[:cut]), np.sort(perm[cut:])
            mine = mine[_cap(len(mine), max_client_train, seed, name, "client_train")]
            client_train = ArrayDataset(x=_image_size(x[mine], size), y=y[mine], name=f"{name}_client",
                                        num_classes=10)
            keep_test = _cap(len(test.y), max_client_test, seed, name, "client_test")
            client_test = ArrayDataset(x=_image_size(test.x[keep_test], size), y=test.y[keep_test],
                                       name=f"{name}_client_test", num_classes=10)
            x, y = x[rest], y[rest]
            origin = rest
        else:
            origin = np.arange(len(y), dtype=np.int64)
        keep = _cap(len(y), max_per_source, seed, name, "pool")
        ids.append(torch.as_tensor(origin[keep]))
        xs.append(_image_size(x[keep], size))
        ys.append(y[keep].long() if name in DIGIT_SOURCES else torch.full((len(keep),), -1, dtype=torch.int64))
        srcs.append(torch.full((len(keep),), s, dtype=torch.int64))
    assert client_train is not None and client_test is not None
    return DigitsPool(client_train=client_train, client_test=client_test, pool_x=torch.cat(xs),
                      pool_y=torch.cat(ys), pool_source=torch.cat(srcs), pool_index=torch.cat(ids),
                      source_names=list(SOURCE_NAMES), client_domain=client_domain)
