"""Compress the pool: K-means centroids of phi(pool) (ECOS step 1, Hong et al. 2022).

Only the K centroids (K x D float32) travel to the client: with K = 100 and D = 64 that is
25.6 kB, whatever the pool's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from cotrain.errors import ConfigError
from cotrain.seeding import derive_seed


@dataclass
class Compression:
    """K-means of the pool's features.

    Attributes:
        centroids: (K, D) float32.
        assignment: (N,) int64, the nearest centroid of each pool sample.
    """

    centroids: np.ndarray
    assignment: np.ndarray

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def cluster_sizes(self) -> np.ndarray:
        return np.bincount(self.assignment, minlength=self.k)


def nearest_centroids(features: np.ndarray, centroids: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Exact L2 search: (squared distances (N, k), indices (N, k)) of the k nearest centroids."""
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    d2, idx = index.search(np.ascontiguousarray(features, dtype=np.float32), k)
    return d2, idx.astype(np.int64)


def compress(features: np.ndarray, *, k: int, seed: int, niter: int = 25) -> Compression:
    """faiss K-means of ``features`` (N, D) into ``k`` centroids, seeded from ``(seed, "kmeans")``."""
    n = features.shape[0]
    if not 1 <= k <= n:
        raise ConfigError(f"K-means: k must be in [1, {n}] (the pool's size), got {k}")
    x = np.ascontiguousarray(features, dtype=np.float32)
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=derive_seed(seed, "kmeans") % (2**31 - 1),
                      max_points_per_centroid=max(256, n // k + 1), verbose=False)
    km.train(x)
    centroids = np.asarray(km.centroids, dtype=np.float32)
    _, idx = nearest_centroids(x, centroids, 1)
    return Compression(centroids=centroids, assignment=idx[:, 0])
