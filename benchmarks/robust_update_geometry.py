"""Where attackers' updates sit among the honest ones: per round, cosine and distance to the round's median.

Why ``credit_groups_direction`` exists (docs/robust.md). One cell of the robust grid
(``robust_aggregation.py``'s settings: MNIST, Dirichlet 0.5, 20 participants, 30 % malicious) is run
with a rule that records, for every round, each upload's cosine to the coordinate-wise median of the
round's uploads, its distance score (distance to that median over the round's median distance) and
its direction score (the same over unit vectors), the mean pairwise cosine of the honest uploads, and
then aggregates as ``--base`` does. Honest and malicious participants are told apart with the
experiment's own ``choose_malicious`` (root seed, participant ids), after the fact; the rule never
sees it.

    python benchmarks/robust_update_geometry.py --data-dir ../shared/data --attack sign_flip --seeds 1 \\
        --json benchmarks/results/robust_update_geometry.json
    python benchmarks/robust_update_geometry.py --quick --json /tmp/geometry_quick.json

Rows, one per (seed, round): for ``honest`` and ``malicious``, the mean, min and max of ``cos_median``,
``distance_score`` and ``direction_score``; ``honest_pairwise_cos``; ``separable_by_cosine`` (every
malicious cosine below every honest one); ``malicious_below_zero`` and ``honest_below_zero`` (shares
with a negative cosine, what ``min_cosine = 0`` would exclude).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import environment, parser, write_json  # noqa: E402

# set before each cell; the rule runs in robust_aggregation's forked worker, so it writes its rows to a file
CELL: dict[str, Any] = {}


def stats(values: torch.Tensor) -> dict[str, float]:
    return {"mean": float(values.mean()), "min": float(values.min()), "max": float(values.max())}


def geometry(updates: torch.Tensor, ids: list[str], malicious: set[str]) -> dict[str, Any]:
    """The round's numbers; ``malicious`` only splits them for the report."""
    from cotrain.aggregation.rules._common import median_rows

    x = updates.to(torch.float64)
    m = median_rows(x)
    unit = x / x.norm(dim=1, keepdim=True).clamp_min(1e-30)
    cos = unit @ (m / m.norm().clamp_min(1e-30))
    dist = (x - m).norm(dim=1)
    udist = (unit - m / m.norm().clamp_min(1e-30)).norm(dim=1)
    bad = torch.tensor([pid in malicious for pid in ids])
    out: dict[str, Any] = {}
    for name, mask in (("honest", ~bad), ("malicious", bad)):
        if bool(mask.any()):
            out[name] = {"cos_median": stats(cos[mask]), "distance_score": stats(dist[mask] / dist.median()),
                         "direction_score": stats(udist[mask] / udist.median())}
    h = unit[~bad]
    out["honest_pairwise_cos"] = float(((h @ h.T).sum() - len(h)) / (len(h) * (len(h) - 1)))
    out["honest_below_zero"] = float((cos[~bad] < 0).double().mean())
    if bool(bad.any()):
        out["malicious_below_zero"] = float((cos[bad] < 0).double().mean())
        out["separable_by_cosine"] = bool(cos[bad].max() < cos[~bad].min())
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--attack", default="sign_flip", help="an attack row of robust_aggregation.py")
    p.add_argument("--base", default="credit_groups_robust", help="the rule that aggregates (the trajectory)")
    p.add_argument("--seeds", default="1")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--local-steps", type=int, default=10)
    p.add_argument("--malicious-fraction", type=float, default=0.3)
    command = " ".join(["python", "benchmarks/robust_update_geometry.py"] + sys.argv[1:])
    args = p.parse_args()
    import robust_aggregation as ra

    from cotrain.aggregation import build_aggregator
    from cotrain.aggregation.base import Aggregator, register_aggregator

    base = build_aggregator(args.base)

    @register_aggregator("_geometry")
    class Geometry(Aggregator):  # records the round's geometry, then aggregates as --base
        on_updates = type(base).on_updates

        def combine(self, updates, weights, ids, context):  # type: ignore[no-untyped-def]
            malicious = set(choose_malicious(sorted(ids), CELL["fraction"], seed=CELL["seed"]))
            row = {"seed": CELL["seed"], "round": context.round, **geometry(updates, list(ids), malicious)}
            with open(CELL["path"], "a") as f:
                f.write(json.dumps(row) + "\n")
            return base.combine(updates, weights, ids, context)

    from cotrain.behaviours.base import choose_malicious

    rows: list[dict[str, Any]] = []
    cells: list[dict[str, Any]] = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            CELL.update(seed=seed, fraction=args.malicious_fraction, path=str(Path(tmp) / "geometry.jsonl"))
            out = str(Path(tmp) / "cell.json")
            sys.argv = ["robust_aggregation.py", "--data-dir", args.data_dir, "--rules", "_geometry", "--attacks",
                        args.attack, "--seeds", str(seed), "--workers", "1", "--max-test-samples", "1000",
                        "--rounds", str(args.rounds), "--local-steps", str(args.local_steps), "--json", out,
                        "--malicious-fraction", str(args.malicious_fraction)]
            if args.quick:  # not robust_aggregation's --quick: that one keeps only its own rules and attacks
                sys.argv += ["--rounds", "3", "--local-steps", "5", "--max-train-samples", "3000"]
            ra.main()
            cell = json.loads(Path(out).read_text())
            assert cell["settings"]["malicious_fraction"] == CELL["fraction"]
            rows += [json.loads(line) for line in Path(CELL["path"]).read_text().splitlines()]
        cells += [{k: v for k, v in r.items() if k != "accuracy_per_round"} for r in cell["rows"]]
        write_json(args.json, {"benchmark": "robust_update_geometry", "attack": args.attack, "base": args.base,
                               "settings": cell["settings"], "environment": environment(),
                               "command": command,
                               "cells": cells, "rows": rows})
    for r in rows:
        h, m = r["honest"]["cos_median"], r.get("malicious", {}).get("cos_median", {})
        print(f"seed {r['seed']} round {r['round']:3d}  honest cos {h['mean']:+.3f} [{h['min']:+.3f}, {h['max']:+.3f}]"
              f"  malicious cos {m.get('mean', float('nan')):+.3f}  pairwise {r['honest_pairwise_cos']:+.3f}")


if __name__ == "__main__":
    main()
