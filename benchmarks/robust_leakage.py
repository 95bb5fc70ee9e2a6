"""Leakage under grouping and perturbation: the gradient audit on what a FedSGD server sees.

Issue 12's leakage runs. UTKFace (task race, private attribute gender: the real data set and
attribute of ``attribute_inference.py``; gender is binary, so the majority guess is a clear floor),
10 IID participants, FedSGD (the audit reads one-step gradient uploads), small CNN. Settings: no
defence (rule ``mean``); grouping (``credit_groups``) without perturbation; client-side clip +
Gaussian noise (defence ``dp_client``: every upload is perturbed before it leaves the client) at two
noise multipliers, each with rule ``mean`` and with ``credit_groups``. The curious server
(``[audit]``) attacks every participant's upload of the audited rounds, as received, i.e. after the
defence; grouping happens after that, so it cannot change what the audit reads, only the trained
model. Clip norm C: the median batch-gradient norm at the initial model (measured here). Epsilon:
the ledger's spends through the ``rdp`` accountant (``pld`` takes minutes at these small noise
multipliers), max over participants, delta 1e-5.

    python benchmarks/robust_leakage.py --data-dir ../shared/data --threads 1 \\
        --json benchmarks/results/robust_leakage.json
    python benchmarks/robust_leakage.py --quick --json /tmp/robust_leakage_quick.json

Rows: the issue's schema (dataset, protocol "fedsgd", rule, attack "none", malicious_fraction 0,
partition, seed, test_accuracy, backdoor_success null, excluded_malicious, excluded_honest, epsilon,
audit_attribute_accuracy, audit_majority) plus setting, noise_multiplier, clip_norm, audit_uploads,
audit_samples, seconds.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, parser, setup_threads, write_json  # noqa: E402
from robust_aggregation import exclusion_shares  # noqa: E402


def settings_grid(sigmas: list[float]) -> list[tuple[str, str, float | None]]:
    """(setting, rule, noise multiplier or None for no defence)."""
    grid: list[tuple[str, str, float | None]] = [("none", "mean", None), ("grouping", "credit_groups", None)]
    for s in sigmas:
        grid += [(f"dp_{s:g}", "mean", s), (f"dp_{s:g}+grouping", "credit_groups", s)]
    return grid


def make_config(s: dict[str, Any], rule: str, sigma: float | None, out: str) -> Any:
    from cotrain.experiment import config_from_dict

    cfg: dict[str, Any] = {
        "run": {"name": f"{rule}-{sigma}", "seed": s["seed"], "output_dir": out, "save_model": False, "threads": 1},
        "data": {"dataset": s["dataset"], "data_dir": s["data_dir"], "options": s["data_options"],
                 "participants": s["participants"], "partition": "iid"},
        "model": {"name": "small_cnn", "options": {"width": s["width"]}},
        "fedavg": {"rounds": s["rounds"], "upload": "gradient", "batch_size": s["batch_size"],
                   "server_lr": s["server_lr"], "eval_every": s["rounds"]},
        "aggregation": {"name": rule, "options": {}},
        "audit": {"enabled": True, "rounds": s["audit_rounds"], "attribute": s["attribute"],
                  "aux_samples": s["aux_samples"], "steps": s["audit_steps"], "time_limit_s": s["audit_time_s"]},
        "privacy": {"accountant": "rdp", "delta": 1e-5},
    }
    if sigma is not None:
        cfg["defence"] = {"name": "dp_client", "options": {"clip_norm": s["clip_norm"], "noise_multiplier": sigma}}
    return config_from_dict(cfg)


def initial_gradient_norms(s: dict[str, Any], out: str, n: int = 20) -> list[float]:
    """Batch-gradient norms (batches of the run's size) of the initial shared model on training data."""
    import torch

    from cotrain.experiment.prepare import prepare_data
    from cotrain.experiment.setup import build_global_model

    cfg = make_config(s, "mean", None, out)
    data = prepare_data(cfg)
    model = build_global_model(cfg, data)
    train, g = data.splits.train, torch.Generator().manual_seed(s["seed"])
    norms = []
    for _ in range(n):
        idx = torch.randint(len(train), (s["batch_size"],), generator=g)
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(train.x[idx]), train.y[idx]).backward()
        norms.append(float(torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))))
    return sorted(norms)


def run_setting(s: dict[str, Any], name: str, rule: str, sigma: float | None, out: str) -> dict[str, Any]:
    import json

    from cotrain.experiment import run_experiment

    t0 = time.perf_counter()
    result = run_experiment(make_config(s, rule, sigma, out))
    audit = json.loads((Path(result.run_dir) / "audit.json").read_text())["results"]
    _, excluded_h = exclusion_shares(result.history, set())  # no malicious participant
    return {"dataset": s["dataset"], "protocol": "fedsgd", "rule": rule, "attack": "none", "malicious_fraction": 0.0,
            "partition": "iid", "seed": s["seed"], "test_accuracy": float(result.history[-1]["test_accuracy"]),
            "backdoor_success": None, "excluded_malicious": None, "excluded_honest": excluded_h,
            "epsilon": result.summary.get("epsilon_max"),
            "audit_attribute_accuracy": result.summary["audit_attribute_accuracy"],
            "audit_majority": result.summary["audit_majority"],
            "setting": name, "noise_multiplier": sigma, "clip_norm": s["clip_norm"] if sigma is not None else None,
            "audit_uploads": len(audit), "audit_samples": sum(r["batch_size"] for r in audit),
            "audit_success_rate_embedding": result.summary.get("audit_success_rate_embedding"),
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--sigmas", default="0.01,0.1", help="the two noise multipliers of dp_client")
    p.add_argument("--clip", type=float, default=None, help="clip norm C (default: median initial gradient norm)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    setup_threads(args)
    s: dict[str, Any] = {"dataset": "utkface", "data_dir": str(Path(args.data_dir).resolve()),
                         "data_options": {"task": "race", "size": 32}, "attribute": "gender", "participants": 10,
                         "width": 16, "batch_size": 16, "server_lr": 0.2, "rounds": args.rounds, "seed": args.seed,
                         "audit_rounds": [args.rounds // 2, args.rounds], "aux_samples": 1000, "audit_steps": 100,
                         "audit_time_s": 3.0, "quick": args.quick}
    if args.quick:
        s.update(rounds=20, audit_rounds=[20], audit_steps=10, audit_time_s=1.0)
    sigmas = [float(v) for v in args.sigmas.split(",")]
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        norms = initial_gradient_norms(s, out)
        s["initial_gradient_norms"] = [round(v, 4) for v in norms]
        s["clip_norm"] = args.clip if args.clip is not None else round(norms[len(norms) // 2], 3)
        for name, rule, sigma in settings_grid(sigmas):
            row = run_setting(s, name, rule, sigma, out)
            rows.append(row)
            print(f"{name:18s} acc {row['test_accuracy']:.4f} audit {row['audit_attribute_accuracy']:.4f} "
                  f"majority {row['audit_majority']:.4f} eps {row['epsilon']} ({row['seconds']:.0f} s)", flush=True)
            write_json(args.json, {"benchmark": "robust_leakage", "settings": s, "environment": environment(),
                                   "command": " ".join(sys.argv), "seconds": round(time.perf_counter() - t0, 1),
                                   "rows": rows})


if __name__ == "__main__":
    main()
