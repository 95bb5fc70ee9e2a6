"""Centroid Coverage scores and their L2 sensitivity (ECOS step 2, Hong et al. 2022).

The client encodes its n samples, z_i = phi(x_i), and releases per centroid c_j the score

    s_j = sum_i v_j(z_i),   v(z) in {0, 1}^K   (the contribution of one sample, shape (K,)).

Under add/remove-one neighbouring data sets the score vector changes by exactly one sample's
v(z), so its L2 sensitivity is max_z ||v(z)||_2 = sqrt(max_z ||v(z)||_0), the square root of the
most centroids one sample can count for:

* ``nearest``: v(z) = e_{argmin_j ||z - c_j||}. One entry: sensitivity 1.
* ``knearest`` (k): v(z) marks the k nearest centroids. Exactly k entries: sensitivity sqrt(k).
* ``radius`` (r, cap m): v(z) marks the centroids with ||z - c_j|| <= r, at most the m nearest of
  them. Uncapped a sample can lie in all K balls (sensitivity sqrt(K)); capped, sqrt(min(m, K)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cotrain.errors import ConfigError
from cotrain.registry import Registry
from cotrain.sampling.compress import nearest_centroids


@dataclass(frozen=True, kw_only=True)
class CoverageRule:
    """A score rule: ``counts`` (the exact score vector) and ``sensitivity`` (its L2 sensitivity)."""

    def contributions(self, features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        """v(z_i) for every sample: (n, K) in {0, 1}."""
        raise NotImplementedError

    def counts(self, features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        """The exact scores s = sum_i v(z_i), float64 of shape (K,)."""
        if features.shape[0] == 0:
            return np.zeros(centroids.shape[0])
        return self.contributions(features, centroids).sum(axis=0).astype(np.float64)

    def max_entries(self, num_centroids: int) -> int:
        """The most centroids one sample counts for."""
        raise NotImplementedError

    def sensitivity(self, num_centroids: int) -> float:
        """L2 sensitivity of :meth:`counts` under adding or removing one sample."""
        return math.sqrt(self.max_entries(num_centroids))


COVERAGE_RULES: Registry[type[CoverageRule]] = Registry("coverage rule")


def _marks(idx: np.ndarray, keep: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((idx.shape[0], k), dtype=np.int64)
    rows = np.repeat(np.arange(idx.shape[0]), idx.shape[1])
    np.add.at(out, (rows[keep.ravel()], idx.ravel()[keep.ravel()]), 1)
    return out


@COVERAGE_RULES.register("nearest")
@dataclass(frozen=True, kw_only=True)
class NearestCentroid(CoverageRule):
    """Each sample counts for its nearest centroid (the default)."""

    def contributions(self, features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        _, idx = nearest_centroids(features, centroids, 1)
        return _marks(idx, np.ones_like(idx, dtype=bool), centroids.shape[0])

    def max_entries(self, num_centroids: int) -> int:
        return 1


@COVERAGE_RULES.register("knearest")
@dataclass(frozen=True, kw_only=True)
class KNearestCentroids(CoverageRule):
    """Each sample counts for its ``k`` nearest centroids."""

    k: int = 3

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"knearest coverage: k must be >= 1, got {self.k}")

    def contributions(self, features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        k = min(self.k, centroids.shape[0])
        _, idx = nearest_centroids(features, centroids, k)
        return _marks(idx, np.ones_like(idx, dtype=bool), centroids.shape[0])

    def max_entries(self, num_centroids: int) -> int:
        return min(self.k, num_centroids)


@COVERAGE_RULES.register("radius")
@dataclass(frozen=True, kw_only=True)
class RadiusCoverage(CoverageRule):
    """Each sample counts for every centroid within L2 distance ``radius``, at most the ``cap`` nearest
    (``cap=None``: no cap, sensitivity sqrt(K))."""

    radius: float = 0.5
    cap: int | None = None

    def __post_init__(self) -> None:
        if not self.radius > 0:
            raise ConfigError(f"radius coverage: radius must be > 0, got {self.radius}")
        if self.cap is not None and self.cap < 1:
            raise ConfigError(f"radius coverage: cap must be >= 1 or None, got {self.cap}")

    def contributions(self, features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        d2, idx = nearest_centroids(features, centroids, self.max_entries(centroids.shape[0]))
        return _marks(idx, d2 <= self.radius ** 2, centroids.shape[0])

    def max_entries(self, num_centroids: int) -> int:
        return num_centroids if self.cap is None else min(self.cap, num_centroids)


def build_rule(name: str, **options: object) -> CoverageRule:
    """The registered rule ``name`` with its options (``knearest``: k; ``radius``: radius, cap)."""
    from cotrain.registry import check_options

    cls = COVERAGE_RULES.get(name)
    check_options(cls, dict(options), f"coverage rule {name!r}")
    return cls(**options)  # type: ignore[arg-type]
