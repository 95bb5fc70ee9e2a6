"""Splitting one data set across participants (IID, label skew, domain, attribute skew).

``partition(name, dataset, K, seed=..., **options)`` returns K sorted int64 index arrays that are
disjoint and together cover the data set. Randomness comes from ``numpy_rng(seed, "partition",
name)``, so the same seed gives the same split.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from cotrain.data.base import ArrayDataset
from cotrain.registry import Registry, check_options
from cotrain.seeding import numpy_rng

Partitioner = Callable[..., list[np.ndarray]]
PARTITIONERS: Registry[Partitioner] = Registry("partitioner")
MAX_TRIES = 1000


def register_partitioner(name: str) -> Callable[[Partitioner], Partitioner]:
    """Decorator registering ``fn(dataset, num_participants, rng, **options) -> list[index array]``."""

    return PARTITIONERS.register(name)


def available_partitioners() -> list[str]:
    """Registered partitioner names, sorted."""
    return PARTITIONERS.names()


def partition(
    name: str, dataset: ArrayDataset, num_participants: int, *, seed: int, **options: Any
) -> list[np.ndarray]:
    """Split ``dataset`` into ``num_participants`` disjoint sorted int64 index arrays.

    Raises ``ValueError`` for an unknown partitioner (listing the known ones), an unknown option,
    fewer than one participant or more participants than samples.
    """
    fn = PARTITIONERS.get(name)
    check_options(fn, options, f"partitioner {name!r}")
    n, k = len(dataset), num_participants
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"num_participants must be a positive integer, got {k!r}")
    if k > n:
        raise ValueError(f"more participants ({k}) than samples ({n}) in {dataset.name!r}")
    parts = fn(dataset, int(k), numpy_rng(seed, "partition", name), **options)
    parts = [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    total = sum(len(p) for p in parts)
    if len(parts) != k or len(np.unique(np.concatenate(parts))) != total:
        raise RuntimeError(f"partitioner {name!r} returned overlapping or missing participants")
    return parts


def partition_table(dataset: ArrayDataset, parts: list[np.ndarray], by: str = "label") -> np.ndarray:
    """Counts per participant, int64 (num_participants, num_values).

    ``by``: ``"label"`` (columns = classes), ``"domain"`` or an attribute name.
    """
    keys = _keys(dataset, by)
    width = int(keys.max()) + 1 if len(keys) else 0
    if by == "label":
        width = max(width, dataset.num_classes)
    return np.stack([np.bincount(keys[p], minlength=width) for p in parts]).astype(np.int64)


def _keys(dataset: ArrayDataset, by: str) -> np.ndarray:
    if by == "label":
        return dataset.y.cpu().numpy()
    if by == "domain":
        if dataset.domain is None:
            raise ValueError(f"data set {dataset.name!r} has no domains")
        return dataset.domain.cpu().numpy()
    if by not in dataset.attributes:
        known = ", ".join(sorted(dataset.attributes)) or "none"
        raise ValueError(f"data set {dataset.name!r} has no attribute {by!r}; attributes: {known}")
    return dataset.attributes[by].cpu().numpy()


def dirichlet_split(
    keys: np.ndarray, k: int, alpha: float, min_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Skew by ``keys`` (N,): each key value's samples are cut among ``k`` participants in
    proportions drawn from Dirichlet(alpha). A participant already holding N/k samples gets no
    more; the draw is repeated until everyone holds at least ``min_size`` samples."""
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    n = len(keys)
    if min_size < 0 or min_size * k > n:
        raise ValueError(f"min_size={min_size} x {k} participants exceeds the {n} samples")
    values = np.unique(keys)
    for _ in range(MAX_TRIES):
        buckets: list[list[np.ndarray]] = [[] for _ in range(k)]
        sizes = np.zeros(k, dtype=np.int64)
        for v in values:
            idx = rng.permutation(np.flatnonzero(keys == v))
            p = rng.dirichlet(np.full(k, float(alpha)))
            open_ = p * (sizes < n / k)
            p = open_ / open_.sum() if open_.sum() > 0 else p
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
            for j, chunk in enumerate(np.split(idx, cuts)):
                buckets[j].append(chunk)
                sizes[j] += len(chunk)
        if sizes.min() >= min_size:
            return [np.concatenate(b) for b in buckets]
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) draw gave all {k} participants >= {min_size} samples in "
        f"{MAX_TRIES} tries; raise alpha, lower min_size or use fewer participants"
    )


def _default_min_size(n: int, k: int, min_size: int | None) -> int:
    return max(1, min(10, n // (2 * k))) if min_size is None else int(min_size)


@register_partitioner("iid")
def iid(dataset: ArrayDataset, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random permutation cut into ``k`` near-equal parts (sizes differ by at most one)."""
    return list(np.array_split(rng.permutation(len(dataset)), k))


@register_partitioner("dirichlet")
def dirichlet(
    dataset: ArrayDataset, k: int, rng: np.random.Generator, *, alpha: float = 0.5,
    min_size: int | None = None,
) -> list[np.ndarray]:
    """Label skew: per class, proportions ~ Dirichlet(alpha) (small alpha: few classes per
    participant; large alpha: near IID). ``min_size`` defaults to min(10, N // (2k))."""
    min_size = _default_min_size(len(dataset), k, min_size)
    return dirichlet_split(_keys(dataset, "label"), k, alpha, min_size, rng)


@register_partitioner("attribute")
def attribute(
    dataset: ArrayDataset, k: int, rng: np.random.Generator, *, attribute: str | None = None,
    alpha: float = 0.5, min_size: int | None = None,
) -> list[np.ndarray]:
    """Skew by the private attribute ``attribute`` with Dirichlet(alpha), like ``dirichlet``."""
    if attribute is None:
        raise ValueError(f"partitioner 'attribute' needs attribute=<one of {sorted(dataset.attributes)}>")
    keys = _keys(dataset, attribute)
    return dirichlet_split(keys, k, alpha, _default_min_size(len(dataset), k, min_size), rng)


@register_partitioner("domain")
def domain(dataset: ArrayDataset, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Participant p holds one domain when k >= D (domain p mod D, shared IID among the
    participants on it), else the domains {d : d mod k == p}. Needs ``dataset.domain``."""
    keys = _keys(dataset, "domain")
    domains = np.unique(keys)
    by_domain = [rng.permutation(np.flatnonzero(keys == d)) for d in domains]
    if k < len(domains):
        return [np.concatenate(by_domain[p::k]) for p in range(k)]
    parts: list[np.ndarray] = [np.zeros(0, np.int64)] * k
    for i, idx in enumerate(by_domain):
        owners = list(range(i, k, len(domains)))
        if len(idx) < len(owners):
            raise ValueError(f"domain {domains[i]} has {len(idx)} samples for {len(owners)} participants")
        for owner, chunk in zip(owners, np.array_split(idx, len(owners))):
            parts[owner] = chunk
    return parts
