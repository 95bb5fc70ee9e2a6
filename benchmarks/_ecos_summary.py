"""Tables for docs/sampling.md from the ECOS benchmark JSON files (prints markdown).

    python benchmarks/_ecos_summary.py benchmarks/results/open_source_sampling.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import numpy as np


def main(path: str) -> None:
    data = json.loads(open(path).read())
    rows = data["rows"]
    if "selection-sweep" in data["benchmark"]:
        cells = defaultdict(list)
        for r in rows:
            cells[(r["encoder"], r["method"], r.get("k"), r.get("candidate_factor"))].append(
                (r["client_domain"], r["in_domain_fraction"]))
        print("| encoder | method | K | r | " + " | ".join(sorted({d for v in cells.values() for d, _ in v})) + " | mean |")
        for key, v in sorted(cells.items(), key=lambda kv: str(kv[0])):
            vals = dict(v)
            print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | "
                  + " | ".join(f"{vals[d]:.3f}" for d in sorted(vals)) + f" | {np.mean(list(vals.values())):.3f} |")
        return
    cells = defaultdict(lambda: defaultdict(list))
    for r in rows:
        key = (r["downstream"], r["budget"], r["method"], r["encoder"])
        cells[key][r["client_domain"]].append(r)
    domains = sorted({r["client_domain"] for r in rows})
    print("| downstream | budget | method | encoder | " + " | ".join(domains)
          + " | mean acc | in-domain (mean) | epsilon | bytes down/up | seeds |")
    print("|" + "---|" * (9 + len(domains)))
    for key, by_dom in sorted(cells.items(), key=lambda kv: str(kv[0])):
        accs = {d: np.mean([r["test_accuracy"] for r in rs]) for d, rs in by_dom.items()}
        ind = [r["in_domain_fraction"] for rs in by_dom.values() for r in rs if r["in_domain_fraction"] is not None]
        any_row = next(iter(by_dom.values()))[0]
        seeds = sorted({r["seed"] for rs in by_dom.values() for r in rs})
        mean_acc = 100 * np.mean(list(accs.values()))
        per_domain = " | ".join(f"{100 * accs[d]:.1f}" if d in accs else "-" for d in domains)
        in_dom = f"{np.mean(ind):.3f}" if ind else "-"
        print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3] or '-'} | {per_domain} | {mean_acc:.1f} | {in_dom} | "
              f"{any_row['epsilon']:.3g} | {any_row['bytes_down']}/{any_row['bytes_up']} | {seeds} |")

if __name__ == "__main__":
    main(sys.argv[1])
