"""The run's PNG plots: test accuracy per round, bytes per round stacked by payload kind.

(The partition plot, class counts per participant, is drawn by ``cotrain.data.plot_partition``.)
Matplotlib runs on its file-only backend, so no display is ever needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig: Any, path: str | Path) -> Path:
    p = Path(path)
    fig.tight_layout()
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def plot_accuracy(history: Sequence[dict[str, Any]], path: str | Path, *, title: str = "Test accuracy") -> Path:
    """Test accuracy (left axis) and test loss (right axis) per round."""
    rounds = [r["round"] for r in history]
    acc = [r.get("test_accuracy") for r in history]
    loss = [r.get("test_loss") for r in history]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(rounds, [a if a is not None else float("nan") for a in acc], "o-", color="tab:blue", label="accuracy")
    ax.set_xlabel("round")
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
    ax.set_title(title)
    return _save(fig, path)


def plot_bytes(by_round: dict[int, dict[str, int]], path: str | Path,
               *, title: str = "Bytes exchanged per round") -> Path:
    """Stacked bars: for each round, bytes of each payload kind (parameters, gradients, ...), from
    ``Ledger.bytes_by_round_and_payload()``."""
    rounds = sorted(by_round)
    kinds = sorted({k for v in by_round.values() for k in v})
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bottom = [0.0] * len(rounds)
    scale, unit = _unit(max((sum(v.values()) for v in by_round.values()), default=0))
    for kind in kinds:
        values = [by_round[r].get(kind, 0) / scale for r in rounds]
        ax.bar([str(r) for r in rounds], values, bottom=bottom, label=kind)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xlabel("round")
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


def plot_partition(dataset: Any, parts: Sequence[Any], path: str | Path) -> Path:
    """Class counts per participant (stacked bars). Uses ``cotrain.data.plot_partition`` when the
    data package has it, else draws ``cotrain.data.partition_table`` here."""
    import cotrain.data as data

    theirs = getattr(data, "plot_partition", None)
    if theirs is not None:
        out = theirs(dataset, list(parts), path)
        return Path(out) if out is not None else Path(path)
    table = data.partition_table(dataset, list(parts))  # (participants, classes)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    names = [str(i) for i in range(len(parts))]
    bottom = [0.0] * len(parts)
    cmap = plt.get_cmap("tab10" if table.shape[1] <= 10 else "tab20")
    for c in range(table.shape[1]):
        values = [float(v) for v in table[:, c]]
        ax.bar(names, values, bottom=bottom, color=cmap(c % cmap.N), label=str(c))
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xlabel("participant")
    ax.set_ylabel("training samples")
    if table.shape[1] <= 20:
        ax.legend(title="class", fontsize=7, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_title("Class counts per participant")
    return _save(fig, path)
