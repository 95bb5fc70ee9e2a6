"""Leakage under grouping and perturbation: the gradient audit on what a FedSGD server sees.

Issue 12's leakage runs. 10 IID participants, FedSGD (the audit reads one-step gradient uploads),
small CNN (width 16). Settings: no defence (rule ``mean``); grouping (``credit_groups``) without
perturbation; client-side clip + Gaussian noise (defence ``dp_client``: every upload is perturbed
before it leaves the client) at two noise multipliers, each with rule ``mean`` and with
``credit_groups``; and the negative control ``noise_only_<sigma>``: the same noise N(0, (sigma C)^2)
on a gradient clipped to C * 1e-9 (noise multiplier sigma * 1e9), so that an upload carries no
information about its batch in float32 and whatever the audit scores above the majority guess is the
score's floor, not leakage. The curious server (``[audit]``) attacks every participant's upload of the audited
rounds, as received, i.e. after the defence; grouping happens after that, so it cannot change what
the audit reads, only the trained model. Clip norm C: the median batch-gradient norm at the initial
model (measured here, per seed). Epsilon: the ledger's spends through the ``rdp`` accountant (``pld``
takes minutes at small noise multipliers), max over participants, delta 1e-5.

Data (``--dataset``; task / private attribute, never the same): ``utkface`` race / gender (the
default, the real data of ``attribute_inference.py``), ``synthetic`` class / thickness, ``dsprites``
shape / scale_large. The audit's positive control (no defence, audit above the majority guess)
depends on the batch per upload: E(X) is determined by the head's gradient only for B <= K
(docs/audit.md), so ``--batch-size`` below the class count is where it is expected to succeed.

    # the first run (UTKFace, B = 16, audit at rounds 150 and 300: the positive control failed)
    python benchmarks/robust_leakage.py --data-dir ../shared/data --threads 1 \\
        --json benchmarks/results/robust_leakage.json
    # the runs with a working positive control (docs/robust.md, "Leakage")
    python benchmarks/robust_leakage.py --data-dir ../shared/data --threads 1 --dataset synthetic \\
        --batch-size 8 --rounds 300 --audit-rounds 1,150,300 --sigmas 0.01,1 --seeds 0 \\
        --json benchmarks/results/robust_leakage_synthetic.json
    python benchmarks/robust_leakage.py --data-dir ../shared/data --threads 1 --dataset utkface \\
        --batch-size 4 --rounds 300 --audit-rounds 1,150,300 --sigmas 0.01,1 --settings none,dp_0.01,dp_1 \\
        --json benchmarks/results/robust_leakage_utkface_b4.json
    python benchmarks/robust_leakage.py --quick --json /tmp/robust_leakage_quick.json

``--settings`` runs a subset of the grid, ``--seeds`` several seeds, ``--append`` keeps the rows
already in ``--json`` (the trials of ``robust_leakage_trials.json`` were run so, ``--settings none``).

Rows: the issue's schema (dataset, protocol "fedsgd", rule, attack "none", malicious_fraction 0,
partition, seed, test_accuracy, backdoor_success null, excluded_malicious, excluded_honest, epsilon,
audit_attribute_accuracy, audit_majority) plus setting, noise_multiplier, noise_std (sigma C), clip_norm, audit_uploads,
audit_samples, audit_by_round (per audited round: attribute accuracy, majority guess, E(X) success),
the run's attribute, participants, batch_size, rounds, audit_rounds, server_lr, and seconds.
"""

from __future__ import annotations

import json
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
    return grid + [(f"noise_only_{s:g}", "mean", s) for s in sigmas]


# the negative control's clip: the gradient keeps 1e-9 of C, below float32's resolution next to the noise
NOISE_ONLY_SIGNAL = 1e-9


def defence_options(s: dict[str, Any], name: str, sigma: float) -> dict[str, float]:
    """dp_client's clip norm and noise multiplier: (C, sigma), or for the negative control
    (C * 1e-9, sigma * 1e9): the same noise std sigma * C on a gradient shrunk to nothing."""
    if name.startswith("noise_only"):
        return {"clip_norm": s["clip_norm"] * NOISE_ONLY_SIGNAL, "noise_multiplier": sigma / NOISE_ONLY_SIGNAL}
    return {"clip_norm": s["clip_norm"], "noise_multiplier": sigma}


def make_config(s: dict[str, Any], rule: str, sigma: float | None, out: str, name: str = "") -> Any:
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
        cfg["defence"] = {"name": "dp_client", "options": defence_options(s, name, sigma)}
    return config_from_dict(cfg)


def initial_gradient_norms(s: dict[str, Any], out: str, n: int = 20) -> tuple[list[float], int]:
    """Batch-gradient norms (batches of the run's size) of the initial shared model on training data,
    and the model's parameter count d (the noise on an upload has norm about sigma * C * sqrt(d))."""
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
    return sorted(norms), sum(p.numel() for p in model.parameters())


def run_setting(s: dict[str, Any], name: str, rule: str, sigma: float | None, out: str) -> dict[str, Any]:
    from cotrain.experiment import run_experiment

    t0 = time.perf_counter()
    result = run_experiment(make_config(s, rule, sigma, out, name))
    audit = json.loads((Path(result.run_dir) / "audit.json").read_text())["results"]
    _, excluded_h = exclusion_shares(result.history, set())  # no malicious participant
    defence = {} if sigma is None else defence_options(s, name, sigma)
    return {"dataset": s["dataset"], "protocol": "fedsgd", "rule": rule, "attack": "none", "malicious_fraction": 0.0,
            "partition": "iid", "seed": s["seed"], "test_accuracy": float(result.history[-1]["test_accuracy"]),
            "backdoor_success": None, "excluded_malicious": None, "excluded_honest": excluded_h,
            "epsilon": result.summary.get("epsilon_max"),
            "audit_attribute_accuracy": result.summary["audit_attribute_accuracy"],
            "audit_majority": result.summary["audit_majority"],
            "setting": name, "noise_multiplier": defence.get("noise_multiplier"), "clip_norm": defence.get("clip_norm"),
            "noise_std": None if sigma is None else sigma * s["clip_norm"],
            "audit_uploads": len(audit), "audit_samples": sum(r["batch_size"] for r in audit),
            "audit_success_rate_embedding": result.summary.get("audit_success_rate_embedding"),
            "audit_by_round": by_round(audit),
            "attribute": s["attribute"], "participants": s["participants"], "batch_size": s["batch_size"],
            "rounds": s["rounds"], "audit_rounds": s["audit_rounds"], "server_lr": s["server_lr"],
            "model_parameters": s.get("model_parameters"), "seconds": round(time.perf_counter() - t0, 1)}


# data set -> (load options, private attribute); the attribute is never the task
DATA: dict[str, tuple[dict[str, Any], str]] = {
    "utkface": ({"task": "race", "size": 32}, "gender"),
    "dsprites": ({"task": "shape", "size": 32}, "scale_large"),
    "synthetic": ({"n_train": 4000, "n_test": 1000}, "thickness"),
}


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def by_round(audit: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Audited round -> mean attribute accuracy, majority guess and E(X) success over that round's uploads."""
    out: dict[str, dict[str, float]] = {}
    for r in sorted({a["round"] for a in audit}):
        rows = [a for a in audit if a["round"] == r]
        out[str(r)] = {k: round(sum(a.get(src, 0.0) for a in rows) / len(rows), 4) for k, src in
                       (("attribute_accuracy", "attribute_accuracy"), ("majority", "majority_accuracy"),
                        ("success_rate_embedding", "success_rate_embedding"))}
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--dataset", default="utkface", choices=sorted(DATA))
    p.add_argument("--participants", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16, help="samples per upload (one FedSGD batch)")
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--server-lr", type=float, default=0.2, help="FedSGD step size on the mean upload")
    p.add_argument("--audit-rounds", default=None, help="comma-separated (default: rounds/2 and rounds)")
    p.add_argument("--audit-steps", type=int, default=100)
    p.add_argument("--audit-time", type=float, default=3.0, help="seconds per audited upload")
    p.add_argument("--sigmas", default="0.01,0.1", help="the two noise multipliers of dp_client")
    p.add_argument("--clip", type=float, default=None, help="clip norm C (default: median initial gradient norm)")
    p.add_argument("--settings", default=None, help="comma-separated subset of the grid's settings (default: all)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; every setting runs on each")
    p.add_argument("--append", action="store_true", help="keep the rows already in --json (trials of several settings)")
    args = p.parse_args()
    setup_threads(args)
    options, attribute = DATA[args.dataset]
    audit_rounds = ints(args.audit_rounds) if args.audit_rounds else [args.rounds // 2, args.rounds]
    s: dict[str, Any] = {"dataset": args.dataset, "data_dir": str(Path(args.data_dir).resolve()),
                         "data_options": options, "attribute": attribute, "participants": args.participants,
                         "width": 16, "batch_size": args.batch_size, "server_lr": args.server_lr, "rounds": args.rounds,
                         "audit_rounds": audit_rounds, "aux_samples": 1000, "audit_steps": args.audit_steps,
                         "audit_time_s": args.audit_time, "quick": args.quick}
    if args.quick:
        s.update(rounds=20, audit_rounds=[20], audit_steps=10, audit_time_s=1.0)
    sigmas = [float(v) for v in args.sigmas.split(",")]
    grid = settings_grid(sigmas)
    if args.settings:
        keep = args.settings.split(",")
        unknown = sorted(set(keep) - {g[0] for g in grid})
        if unknown:
            p.error(f"--settings: unknown {unknown}; the grid has {[g[0] for g in grid]}")
        grid = [g for g in grid if g[0] in keep]
    old: dict[str, Any] = {}
    if args.append and args.json and Path(args.json).is_file():
        old = json.loads(Path(args.json).read_text())
    rows: list[dict[str, Any]] = list(old.get("rows", []))
    commands = list(old.get("commands", [])) + [" ".join(sys.argv)]
    t0 = time.perf_counter()
    for seed in ints(args.seeds):
        s["seed"] = seed
        with tempfile.TemporaryDirectory() as out:
            norms, s["model_parameters"] = initial_gradient_norms(s, out)
            s["initial_gradient_norms"] = [round(v, 4) for v in norms]
            s["clip_norm"] = args.clip if args.clip is not None else round(norms[len(norms) // 2], 3)
            for name, rule, sigma in grid:
                row = run_setting(s, name, rule, sigma, out)
                rows.append(row)
                print(f"seed {seed} {name:18s} acc {row['test_accuracy']:.4f} audit {row['audit_attribute_accuracy']:.4f} "
                      f"majority {row['audit_majority']:.4f} eps {row['epsilon']} ({row['seconds']:.0f} s)", flush=True)
                write_json(args.json, {"benchmark": "robust_leakage", "settings": s, "environment": environment(),
                                       "command": " ".join(sys.argv), "commands": commands,
                                       "seconds": round(time.perf_counter() - t0, 1) + old.get("seconds", 0.0),
                                       "rows": rows})


if __name__ == "__main__":
    main()
