"""Pictures of how a data set is split across participants."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cotrain.data.base import ArrayDataset
from cotrain.data.partition import partition_table

# Bars stay readable up to about this many participants; beyond it a bar chart's width (and its
# drawing time: one patch per participant and value) grows with the federation, so a heatmap is drawn.
MAX_BARS = 60


def plot_partition(
    dataset: ArrayDataset, parts: list[np.ndarray], path: str | Path, *, by: str = "label",
    title: str | None = None,
) -> Path:
    """Save a stacked bar chart (PNG) of counts per participant, one colour per class
    (or per value of ``by``: ``"domain"`` or an attribute name); above :data:`MAX_BARS`
    participants, a heatmap (value x participant, colour = samples) of bounded size instead.
    Returns the path written."""
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot, no backend switch

    table = partition_table(dataset, parts, by=by)
    k, width = table.shape
    names = (dataset.class_names if by == "label" else dataset.attribute_values.get(by)) or []
    labels = [names[v] if v < len(names) else str(v) for v in range(width)]
    if k > MAX_BARS:
        return _heatmap(table, labels, Path(path), title=title or f"{dataset.name}: {by} counts per participant", by=by)
    cmap = matplotlib.colormaps["tab10" if width <= 10 else "tab20"]
    fig = Figure(figsize=(max(4.0, 0.45 * k + 2), 3.5))
    ax = fig.subplots()
    bottom = np.zeros(k)
    for v in range(width):
        ax.bar(np.arange(k), table[:, v], bottom=bottom, color=cmap(v % cmap.N), label=labels[v],
               width=0.8)
        bottom += table[:, v]
    ax.set_xlabel("participant")
    ax.set_ylabel("samples")
    ax.set_xticks(np.arange(k))
    ax.set_title(title or f"{dataset.name}: {by} counts per participant")
    if width <= 20:
        ax.legend(title=by, fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _heatmap(table: np.ndarray, labels: list[str], path: Path, *, title: str, by: str) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, max(2.5, 0.25 * len(labels) + 1.5)))
    ax = fig.subplots()
    image = ax.imshow(table.T, aspect="auto", interpolation="nearest", cmap="viridis")
    ax.set_yticks(np.arange(len(labels)), labels=labels, fontsize=7 if len(labels) > 10 else 9)
    ax.set_xlabel(f"participant (0 to {table.shape[0] - 1})")
    ax.set_ylabel(by)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="samples")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
