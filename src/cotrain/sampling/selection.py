"""Diversely decompress (ECOS step 3, Hong et al. 2022) and the baselines it is measured against.

Given the noisy scores s~ (K,), the budget B is spread over clusters in proportion to weights

    w_j = max(s~_j, 0) * [s~_j >= threshold]            (default: threshold 0), or
    w_j = softmax(s~ / T)_j * [s~_j >= threshold]        (with a temperature T),

with b_j = B w_j / sum w by largest remainders, never more than the cluster holds (the excess goes
to the other clusters, again in proportion to w). Inside cluster j, b_j samples are chosen by
greedy K-center (Gonzalez 1985; farthest-first): start at the sample nearest the cluster's mean,
then repeatedly take the sample farthest from those chosen, which skips near-duplicates and
approximates min over chosen sets of the covering radius within a factor 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cotrain.errors import ConfigError


@dataclass(frozen=True)
class Allocation:
    """Per-cluster budget ``counts`` (K,) int64 and the ``weights`` (K,) it was drawn from."""

    counts: np.ndarray
    weights: np.ndarray
    fallback: bool  # True: every weight was 0, so the budget follows the cluster sizes


def score_weights(noisy_scores: np.ndarray, *, threshold: float = 0.0,
                  temperature: float | None = None) -> np.ndarray:
    """The clipped non-negative weights w (K,) described in the module docstring."""
    s = np.asarray(noisy_scores, dtype=np.float64)
    keep = s >= threshold
    if temperature is None:
        w = np.clip(s, 0.0, None)
    else:
        if not temperature > 0:
            raise ConfigError(f"selection temperature must be > 0, got {temperature}")
        z = s / temperature
        w = np.exp(z - z.max())
    return np.where(keep, w, 0.0)


def allocate_budget(weights: np.ndarray, cluster_sizes: np.ndarray, budget: int) -> Allocation:
    """Split ``budget`` over clusters by ``weights``, capped by ``cluster_sizes``."""
    sizes = np.asarray(cluster_sizes, dtype=np.int64)
    if budget > sizes.sum():
        raise ConfigError(f"budget {budget} exceeds the pool's {int(sizes.sum())} samples")
    w = np.where(sizes > 0, np.asarray(weights, dtype=np.float64), 0.0)
    fallback = not w.sum() > 0
    if fallback:  # no cluster scored: spend the budget like random sampling would
        w = sizes.astype(np.float64)
    counts = np.zeros_like(sizes)
    left = int(budget)
    while left > 0:
        open_ = (counts < sizes) & (w > 0)
        if not open_.any():  # only zero-weight clusters have room
            open_ = counts < sizes
            w = np.where(open_, sizes.astype(np.float64), 0.0)
        share = np.where(open_, w, 0.0)
        ideal = left * share / share.sum()
        add = np.floor(ideal).astype(np.int64)
        rest = left - int(add.sum())
        if rest:  # largest remainders; ties to the lower index
            order = np.lexsort((np.arange(len(ideal)), -(ideal - add)))
            add[order[:rest]] += 1
        add = np.minimum(add, sizes - counts)
        counts += add
        left = int(budget - counts.sum())
    return Allocation(counts=counts, weights=np.asarray(weights, dtype=np.float64), fallback=fallback)


def kcenter_greedy(features: np.ndarray, m: int) -> np.ndarray:
    """Farthest-first traversal: ``m`` row indices of ``features`` (n, D), in the order chosen."""
    n = features.shape[0]
    if m > n:
        raise ConfigError(f"K-center: cannot choose {m} of {n} points")
    if m <= 0:
        return np.zeros(0, dtype=np.int64)
    x = features.astype(np.float64)
    first = int(np.argmin(((x - x.mean(axis=0)) ** 2).sum(axis=1)))
    chosen = [first]
    dist = ((x - x[first]) ** 2).sum(axis=1)
    dist[first] = -1.0  # never chosen twice, even among exact duplicates (distance 0)
    for _ in range(m - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, ((x - x[nxt]) ** 2).sum(axis=1))
        dist[chosen] = -1.0
    return np.asarray(chosen, dtype=np.int64)


def select_ecos(features: np.ndarray, assignment: np.ndarray, noisy_scores: np.ndarray, budget: int, *,
                threshold: float = 0.0, temperature: float | None = None, centroids: np.ndarray | None = None,
                candidate_factor: float = math.inf) -> tuple[np.ndarray, Allocation]:
    """ECOS's selection: pool indices (budget,) and the allocation behind them.

    ``candidate_factor`` r < inf (needs ``centroids``): K-center runs only over the ceil(r b_j)
    members nearest the centroid, the proximity term of the MAK objective; farthest-first alone
    prefers a cluster's outliers, which in a mixed pool are often the off-domain samples.
    """
    k = len(noisy_scores)
    sizes = np.bincount(assignment, minlength=k)
    alloc = allocate_budget(score_weights(noisy_scores, threshold=threshold, temperature=temperature),
                            sizes, budget)
    picked = []
    for j in np.argsort(-np.asarray(noisy_scores), kind="stable"):  # rank clusters by noisy score
        if alloc.counts[j]:
            members = np.flatnonzero(assignment == j)
            if math.isfinite(candidate_factor) and centroids is not None:
                keep = min(len(members), math.ceil(candidate_factor * alloc.counts[j]))
                d2 = ((features[members] - centroids[j]) ** 2).sum(axis=1)
                members = members[np.argsort(d2, kind="stable")[:keep]]
            picked.append(members[kcenter_greedy(features[members], int(alloc.counts[j]))])
    return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64), alloc


def select_random(pool_size: int, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Baseline: ``budget`` pool indices uniformly without replacement."""
    return rng.choice(pool_size, size=budget, replace=False).astype(np.int64)


def select_kcenter(features: np.ndarray, budget: int) -> np.ndarray:
    """Baseline: greedy K-center over the whole pool (diversity with no client signal)."""
    return kcenter_greedy(features, budget)
