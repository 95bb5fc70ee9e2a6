"""Partitioners: proportions, skew, disjointness, coverage, determinism, errors, table and plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cotrain.data import ArrayDataset, available_partitioners, partition, partition_table
from cotrain.data.plots import plot_partition


def _dataset(n: int = 1000, classes: int = 10, domains: int | None = None) -> ArrayDataset:
    idx = torch.arange(n)
    return ArrayDataset(
        x=torch.zeros(n, 1, 2, 2),
        y=idx % classes,
        attributes={"group": (idx // classes) % 2},
        domain=None if domains is None else (idx // 7) % domains,
        name="toy",
    )


def _check_cover(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)


def test_known_partitioners() -> None:
    assert {"iid", "dirichlet", "domain", "attribute"} <= set(available_partitioners())


def test_iid_proportions() -> None:
    ds = _dataset(1003)
    parts = partition("iid", ds, 4, seed=0)
    _check_cover(parts, 1003)
    assert sorted(len(p) for p in parts) == [250, 251, 251, 251]
    table = partition_table(ds, parts)
    assert table.shape == (4, 10) and table.sum() == 1003
    assert table.min() >= 10  # ~25 per cell expected


def test_dirichlet_skew_depends_on_alpha() -> None:
    ds = _dataset(2000)

    def mean_max_share(alpha: float) -> float:
        table = partition_table(ds, partition("dirichlet", ds, 10, seed=1, alpha=alpha))
        return float((table.max(axis=1) / table.sum(axis=1)).mean())

    skewed, uniform = mean_max_share(0.05), mean_max_share(1000.0)
    assert skewed > 0.6  # most of a participant's data is one class
    assert uniform < 0.2  # near 1/10 per class
    parts = partition("dirichlet", ds, 10, seed=1, alpha=0.05, min_size=20)
    _check_cover(parts, 2000)
    assert min(len(p) for p in parts) >= 20


def test_determinism_from_seed() -> None:
    ds = _dataset()
    a = partition("dirichlet", ds, 5, seed=3, alpha=0.3)
    b = partition("dirichlet", ds, 5, seed=3, alpha=0.3)
    c = partition("dirichlet", ds, 5, seed=4, alpha=0.3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_domain_partitioner() -> None:
    ds = _dataset(700, domains=3)
    parts = partition("domain", ds, 6, seed=0)
    _check_cover(parts, 700)
    doms = [set(ds.domain[p].tolist()) for p in parts]
    assert doms == [{0}, {1}, {2}, {0}, {1}, {2}]
    few = partition("domain", ds, 2, seed=0)
    _check_cover(few, 700)
    assert [set(ds.domain[p].tolist()) for p in few] == [{0, 2}, {1}]
    with pytest.raises(ValueError, match="no domains"):
        partition("domain", _dataset(), 2, seed=0)


def test_attribute_partitioner() -> None:
    ds = _dataset(2000)
    parts = partition("attribute", ds, 4, seed=0, attribute="group", alpha=0.05, min_size=10)
    _check_cover(parts, 2000)
    table = partition_table(ds, parts, by="group")
    assert table.shape == (4, 2)
    assert (table.max(axis=1) / table.sum(axis=1)).mean() > 0.8
    with pytest.raises(ValueError, match="needs attribute"):
        partition("attribute", ds, 4, seed=0)
    with pytest.raises(ValueError, match="no attribute 'age'.*group"):
        partition("attribute", ds, 4, seed=0, attribute="age")


@pytest.mark.parametrize(
    "name, k, options, message",
    [
        ("nope", 2, {}, "unknown partitioner 'nope'; known: .*dirichlet.*iid"),
        ("dirichlet", 2, {"alpha": 0.0}, "alpha must be > 0"),
        ("dirichlet", 2, {"alpha": -1.0}, "alpha must be > 0"),
        ("iid", 101, {}, r"more participants \(101\) than samples \(100\)"),
        ("iid", 0, {}, "positive integer"),
        ("iid", 2, {"alpha": 1.0}, "unknown option.*alpha"),
        ("dirichlet", 10, {"min_size": 20}, "min_size=20"),
    ],
)
def test_errors(name: str, k: int, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        partition(name, _dataset(100), k, seed=0, **options)


def test_impossible_min_size_reports_clearly() -> None:
    ds = _dataset(100, classes=2)
    with pytest.raises(ValueError, match="raise alpha"):
        partition("dirichlet", ds, 10, seed=0, alpha=0.001, min_size=9)


def test_plot_partition(tmp_path: Path) -> None:
    ds = _dataset(500)
    parts = partition("dirichlet", ds, 5, seed=0, alpha=0.5)
    out = plot_partition(ds, parts, tmp_path / "sub" / "parts.png")
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_partition_of_a_large_federation_is_a_bounded_heatmap(tmp_path: Path) -> None:
    # Prepare: 1,000 participants (a bar chart would be 452 inches wide)
    from PIL import Image

    ds = _dataset(3000)
    parts = partition("iid", ds, 1000, seed=0)
    # Execute
    small = Image.open(plot_partition(ds, partition("iid", ds, 5, seed=0), tmp_path / "a.png"))
    large = Image.open(plot_partition(ds, parts, tmp_path / "b.png"))
    # Assert: the large one is a fixed-size picture; the small one stays a bar chart of its own width
    assert large.size[0] <= 1000 and large.size[1] <= 600
    assert small.size[0] < large.size[0]
