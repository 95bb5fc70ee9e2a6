"""The run's PNG plots: test accuracy per round, bytes per round stacked by payload kind.

(The partition plot, class counts per participant, is drawn by ``cotrain.data.plots.plot_partition``.)
Figures are plain ``matplotlib.figure.Figure`` objects saved to files: no pyplot state and no
backend switch, so importing cotrain never changes the user's matplotlib backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib
from matplotlib.figure import Figure


def figure(figsize: tuple[float, float]) -> tuple[Figure, Any]:
    """A figure and one axes, outside pyplot."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def colormap(n: int) -> Any:
    return matplotlib.colormaps["tab10" if n <= 10 else "tab20"]


def _save(fig: Any, path: str | Path) -> Path:
    p = Path(path)
    fig.tight_layout()
    fig.savefig(p, dpi=110)
    return p


def plot_accuracy(history: Sequence[dict[str, Any]], path: str | Path, *, title: str = "Test accuracy",
                  xlabel: str = "round", reference: Sequence[dict[str, Any]] | None = None,
                  reference_label: str = "clean run") -> Path:
    """Test accuracy (left axis) and test loss (right axis) per round (``xlabel``: "epoch" for split learning);
    ``reference``: another run's records, whose accuracy is drawn dashed beside (an attacked run's clean run)."""
    rounds = [r["round"] for r in history]
    acc = [r.get("test_accuracy") for r in history]
    loss = [r.get("test_loss") for r in history]
    fig, ax = figure((6, 3.6))
    ax.plot(rounds, [a if a is not None else float("nan") for a in acc], "o-", color="tab:blue", label="accuracy")
    if reference:
        ax.plot([r["round"] for r in reference], [r.get("test_accuracy") if r.get("test_accuracy") is not None
                                                  else float("nan") for r in reference],
                "--", color="0.45", label=f"accuracy, {reference_label}")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy", color="tab:blue")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if any(v is not None for v in loss):
        ax2 = ax.twinx()
        ax2.plot(rounds, [v if v is not None else float("nan") for v in loss], "s--", color="tab:red",
                 alpha=0.7, label="loss")
        ax2.set_ylabel("test loss", color="tab:red")
    if rounds:
        ax.set_xticks(rounds if len(rounds) <= 20 else rounds[:: max(1, len(rounds) // 10)])
    ax.set_title(title, pad=18 if reference else 6)
    return _save(fig, path)


def plot_bytes(by_round: dict[int, dict[str, int]], path: str | Path,
               *, title: str = "Bytes exchanged per round", xlabel: str = "round") -> Path:
    """Stacked bars: for each round, bytes of each payload kind (parameters, gradients, ...), from
    ``Ledger.bytes_by_round_and_payload()``."""
    rounds = sorted(by_round)
    kinds = sorted({k for v in by_round.values() for k in v})
    fig, ax = figure((6, 3.6))
    bottom = [0.0] * len(rounds)
    scale, unit = _unit(max((sum(v.values()) for v in by_round.values()), default=0))
    for kind in kinds:
        values = [by_round[r].get(kind, 0) / scale for r in rounds]
        ax.bar([str(r) for r in rounds], values, bottom=bottom, label=kind)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xlabel(xlabel)
    ax.set_ylabel(unit)
    if kinds:
        ax.legend(title="payload", fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_title(title)
    return _save(fig, path)


def _unit(n: float) -> tuple[float, str]:
    for scale, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= scale:
            return float(scale), unit
    return 1.0, "bytes"


def plot_scores(history: Sequence[dict[str, Any]], path: str | Path, *, marked: Sequence[str] = ()) -> Path | None:
    """Participant x round heatmap of the aggregation rule's scores; excluded uploads crossed,
    ``marked`` participants (the malicious ones) starred. None when the rule gave no scores."""
    rounds = [r for r in history if r.get("aggregation", {}).get("scores")]
    if not rounds:
        return None
    ids = sorted({p for r in rounds for p in r["aggregation"]["scores"]})
    grid = [[r["aggregation"]["scores"].get(p, float("nan")) for r in rounds] for p in ids]
    fig, ax = figure((max(4.0, 0.35 * len(rounds) + 2.5), max(3.0, 0.25 * len(ids) + 1.2)))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="score")
    for j, r in enumerate(rounds):
        for p in r["aggregation"].get("excluded", []):
            if p in ids:
                ax.plot(j, ids.index(p), "x", color="red", markersize=6)
    ax.set_yticks(range(len(ids)))
    ax.set_yticklabels([("* " if p in marked else "") + p for p in ids], fontsize=6)
    ax.set_xticks(range(len(rounds)))
    ax.set_xticklabels([str(r["round"]) for r in rounds], fontsize=7)
    ax.set_xlabel("round")
    ax.set_title("Aggregation scores (x: excluded, *: malicious)")
    return _save(fig, path)


def plot_coverage(noisy: Sequence[float], allocated: Sequence[int], path: str | Path, *,
                  exact: Sequence[float] | None = None, composition: dict[str, int] | None = None) -> Path:
    """ECOS at a glance: per cluster (sorted by noisy score) the noisy coverage score, the exact one
    when known (in process only: on Flower it never leaves the client) and the samples allocated;
    beside it the selection's composition by source."""
    order = sorted(range(len(noisy)), key=lambda j: -noisy[j])
    fig = Figure(figsize=(10, 3.6) if composition else (6, 3.6))
    ax = fig.add_subplot(1, 2 if composition else 1, 1)
    xs = range(len(order))
    ax.bar(xs, [allocated[j] for j in order], color="tab:green", alpha=0.35, label="samples allocated")
    ax.plot(xs, [noisy[j] for j in order], ".", color="tab:blue", label="noisy score (sent)")
    if exact is not None:
        ax.plot(xs, [exact[j] for j in order], "_", color="black", label="exact count (client only)")
    ax.set_xlabel("cluster, by noisy score")
    ax.set_ylabel("client samples / allocated")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title("Centroid coverage")
    if composition:
        ax2 = fig.add_subplot(1, 2, 2)
        names = sorted(composition, key=lambda n: -composition[n])
        ax2.barh(range(len(names)), [composition[n] for n in names], color="tab:purple")
        ax2.set_yticks(range(len(names)))
        ax2.set_yticklabels(names, fontsize=7)
        ax2.invert_yaxis()
        ax2.set_xlabel("selected samples")
        ax2.set_title("Selection by source")
    return _save(fig, path)
