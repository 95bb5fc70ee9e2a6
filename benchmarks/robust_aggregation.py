"""Robust aggregation against poisoning: every registered rule x every attack, FedAvg of a small CNN.

Headline grid (issue 12): MNIST, Dirichlet(0.5) label skew, 20 participants, 30 % malicious
(chosen from the root seed), every attack (and ``none``) x every rule; extra seeds for the
patent's method (``credit_groups``) and the best baseline. Each run goes through
``cotrain.experiment.run_experiment`` (the user's path: ``[aggregation]``, ``[attack]``); runs are
spread over worker processes (one torch thread each, niced). A clean FedAvg probe run first
measures the median honest update norm per round; its median is the clipping radius of
``dp_fedavg`` (clipping only, no noise: the robustness baseline) and ``centered_clipping``'s tau,
recorded as ``settings.clip_radius`` and ``probe``.

    python benchmarks/robust_aggregation.py --data-dir ../shared/data \\
        --json benchmarks/results/robust_aggregation.json   # committed: run in parts, merged (docs/robust.md)
    python benchmarks/robust_aggregation.py --quick --json /tmp/robust_quick.json

JSON: {"settings", "environment", "command", "rows": [{dataset, protocol, rule, attack, attack_options,
malicious_fraction, partition, seed, test_accuracy, backdoor_success, excluded_malicious,
excluded_honest, epsilon, audit_attribute_accuracy, audit_majority, seconds}], "worst_case": {rule:
{attack, test_accuracy, clean_accuracy}}}. ``excluded_*``: the share of (round, participant) pairs
of that kind the rule excluded; ``backdoor_success``: the share of triggered test images of the
non-target classes classified as the target (measured on every run: without the backdoor attack it
is the model's natural rate). ``epsilon`` and the audit keys are null: this grid runs no perturbation
and no audit.
"""

from __future__ import annotations

import inspect
import json
import logging
import multiprocessing as mp
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, parser, write_json  # noqa: E402

log = logging.getLogger("benchmarks.robust_aggregation")

# (row name, registered attack, options). The row's ``attack`` is the registered name; IPM runs twice.
ATTACKS: list[tuple[str, str | None, dict[str, Any]]] = [
    ("none", None, {}),
    ("label_flip", "label_flip", {}),
    ("sign_flip", "sign_flip", {}),
    ("scaling", "scaling", {"boost": 20.0}),  # Bagdasaryan et al.'s n / eta for 20 participants
    ("gaussian", "gaussian", {"sigma": 1.0}),  # ByzFL's default N(0, 1)
    ("alie", "alie", {}),
    ("ipm_0.1", "ipm", {"epsilon": 0.1}),
    ("ipm_100", "ipm", {"epsilon": 100.0}),
    ("min_max", "min_max", {}),
    ("backdoor", "backdoor", {"target": 0, "fraction": 0.5, "patch": 3, "value": 1.0}),
    ("adaptive", "adaptive", {}),
    # against credit_groups_direction's cosine gate: the same radius, perpendicular to the centre
    ("adaptive_orthogonal", "adaptive", {"direction": "orthogonal"}),
]
ESTIMATING = {"alie", "ipm", "min_max", "adaptive"}
BACKDOOR = {"target": 0, "fraction": 0.5, "patch": 3, "value": 1.0}


def rule_options(rule: str, num_malicious: int, clip: float) -> dict[str, Any]:
    """Options a rule is told: the number of malicious participants where it takes one (Krum's f);
    the clipping radius of DP-FedAvg's clipping (no noise: a robustness baseline) and of centered
    clipping, both set to ``clip``, the median honest update norm the probe measured."""
    from cotrain.aggregation import AGGREGATORS

    params = inspect.signature(AGGREGATORS.get(rule).__init__).parameters
    options: dict[str, Any] = {k: num_malicious for k in ("f", "num_byzantine", "byzantine") if k in params}
    if rule == "dp_fedavg":
        options.update(clip_norm=clip, noise_multiplier=0.0)
    if rule == "centered_clipping":
        options["tau"] = clip
    return options


def probe_update_norms(settings: dict[str, Any], output_dir: str) -> list[float]:
    """Per round, the median L2 norm of the honest updates of a clean FedAvg run (the clip radii)."""
    from cotrain.aggregation.base import register_aggregator
    from cotrain.aggregation.rules.fedavg import FedAvg

    medians: list[float] = []

    @register_aggregator("_norm_probe")
    class NormProbe(FedAvg):  # FedAvg that also measures the update norms it averages
        on_updates = True

        def combine(self, updates, weights, ids, context):  # type: ignore[no-untyped-def]
            medians.append(float(updates.norm(dim=1).median()))
            return super().combine(updates, weights, ids, context)

    job = {"rule": "_norm_probe", "rule_options": {}, "attack_row": "none", "attack": None, "attack_options": {},
           "seed": 0, "settings": settings, "output_dir": output_dir}
    row = run_one(job)
    if "error" in row:
        raise SystemExit(f"the norm probe failed: {row['error']}")
    return [round(m, 4) for m in medians]


def make_config(job: dict[str, Any]) -> Any:
    from cotrain.experiment import config_from_dict

    s = job["settings"]
    cfg: dict[str, Any] = {
        "run": {"name": f"{job['rule']}-{job['attack_row']}-{job['seed']}", "seed": job["seed"],
                "output_dir": job["output_dir"], "save_model": True, "threads": 1},
        "data": {"dataset": s["dataset"], "data_dir": s["data_dir"], "participants": s["participants"],
                 "partition": s["partition"], "partition_options": dict(s["partition_options"]),
                 "max_train_samples": s["max_train_samples"], "max_test_samples": s["max_test_samples"]},
        "model": {"name": "small_cnn", "options": {"width": s["width"]}},
        "aggregation": {"name": job["rule"], "options": job["rule_options"]},
    }
    if s.get("protocol", "fedavg") == "sflv2":
        # SplitFed v2: an epoch per round; the agents' front (first conv block) is what the rule
        # aggregates and what an attacker's END reply changes; the centre keeps the back.
        cfg["method"] = {"name": "split"}
        cfg["split"] = {"variant": "sflv2", "cut": "conv1", "epochs": s["rounds"], "batch_size": s["batch_size"],
                        "lr": s["lr"], "momentum": s["momentum"]}
    else:
        cfg["fedavg"] = {"rounds": s["rounds"], "local_steps": s["local_steps"], "batch_size": s["batch_size"],
                         "lr": s["lr"], "momentum": s["momentum"]}
    if job["attack"] is not None:
        options = dict(job["attack_options"])
        if job["attack"] in ESTIMATING:
            options.setdefault("honest_samples", s["honest_samples"])
        cfg["attack"] = {"name": job["attack"], "fraction": s["malicious_fraction"], "options": options}
    return config_from_dict(cfg)


def exclusion_shares(history: list[dict[str, Any]], malicious: set[str]) -> tuple[float, float]:
    """(malicious, honest): excluded (round, participant) pairs over sampled ones, by kind."""
    counts = {True: [0, 0], False: [0, 0]}
    for record in history:
        excluded = set(record.get("aggregation", {}).get("excluded", []))
        for pid in record["participants"]:
            c = counts[pid in malicious]
            c[0] += pid in excluded
            c[1] += 1
    return tuple(c[0] / c[1] if c[1] else 0.0 for c in (counts[True], counts[False]))  # type: ignore[return-value]


_TRIGGERED: dict[int, Any] = {}  # seed -> the triggered test set (one worker runs many cells)


def backdoor_success(cfg: Any, run_dir: Path) -> float:
    """Accuracy of the final model on triggered non-target test images labelled with the target."""
    import torch

    from cotrain.behaviours import build_attack
    from cotrain.experiment.prepare import prepare_data
    from cotrain.federated import evaluate
    from cotrain.models import build_model

    if cfg.run.seed not in _TRIGGERED:  # the run's own test split (capped from its seed)
        _TRIGGERED[cfg.run.seed] = build_attack("backdoor", **BACKDOOR).triggered(prepare_data(cfg).splits.test)
    test = _TRIGGERED[cfg.run.seed]
    model = build_model("small_cnn", input_shape=test.input_shape, num_classes=int(test.num_classes),
                        **cfg.model.options)
    model.load_state_dict(torch.load(run_dir / "model.pt"))
    return float(evaluate(model, test)["accuracy"])


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """One grid cell through ``run_experiment``; a failure is a row with ``error`` set."""
    import torch

    from cotrain.experiment import run_experiment

    torch.set_num_threads(1)
    s = job["settings"]
    row: dict[str, Any] = {
        "dataset": s["dataset"], "protocol": s.get("protocol", "fedavg"), "rule": job["rule"],
        "attack": job["attack"] or "none", "attack_options": job["attack_options"], "rule_options": job["rule_options"],
        "malicious_fraction": s["malicious_fraction"] if job["attack"] else 0.0,
        "partition": s["partition_name"], "seed": job["seed"], "test_accuracy": None, "backdoor_success": None,
        "excluded_malicious": None, "excluded_honest": None, "epsilon": None,
        "audit_attribute_accuracy": None, "audit_majority": None,
    }
    t0 = time.perf_counter()
    try:
        cfg = make_config(job)
        result = run_experiment(cfg)
        malicious = set(result.summary.get("malicious", []))
        row["test_accuracy"] = float(result.history[-1]["test_accuracy"])
        row["excluded_malicious"], row["excluded_honest"] = exclusion_shares(result.history, malicious)
        row["backdoor_success"] = backdoor_success(cfg, result.run_dir)
        row["accuracy_per_round"] = [round(float(r["test_accuracy"]), 4) for r in result.history]
    except Exception:  # a benchmark reports what failed rather than dying
        row["error"] = traceback.format_exc(limit=3)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def torch_threads_one() -> None:
    import torch

    torch.set_num_threads(1)


def worker_init() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        os.nice(10)
    except OSError:
        pass


def attack_label(r: dict[str, Any]) -> str:
    """A row's attack as the ATTACKS row names it: ipm with its epsilon, adaptive with a direction."""
    options = r.get("attack_options") or {}
    if r["attack"] == "ipm":
        return f"ipm_{options['epsilon']:g}"
    if r["attack"] == "adaptive" and options.get("direction", "reverse") != "reverse":
        return f"adaptive_{options['direction']}"
    return r["attack"]


def worst_case(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per rule: clean accuracy (attack none), and the attack with the lowest mean accuracy over seeds."""
    by: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        if r.get("test_accuracy") is not None:
            key = (r["rule"], attack_label(r))
            by.setdefault(key, []).append(r["test_accuracy"])
    out: dict[str, Any] = {}
    for rule in sorted({k[0] for k in by}):
        means = {a: sum(v) / len(v) for (ru, a), v in by.items() if ru == rule}
        attacked = {a: m for a, m in means.items() if a != "none"}
        worst = min(attacked, key=attacked.get) if attacked else None
        out[rule] = {"clean_accuracy": means.get("none"), "worst_attack": worst,
                     "worst_accuracy": attacked.get(worst) if worst else None,
                     "seeds": max(len(v) for (ru, _), v in by.items() if ru == rule)}
    return out


def markdown(payload: dict[str, Any]) -> str:
    """The results as markdown: accuracy per rule x attack, then backdoor success and exclusions."""
    rows = [r for r in payload["rows"] if r.get("test_accuracy") is not None]
    attacks = [a[0] for a in ATTACKS if any(attack_label(r) == a[0] for r in rows)]
    rules = sorted({r["rule"] for r in rows})
    def cell(rule: str, attack: str, key: str) -> str:
        v = [r[key] for r in rows if r["rule"] == rule and attack_label(r) == attack and r[key] is not None]
        return f"{sum(v) / len(v):.3f}" if v else "-"
    wc = worst_case(payload["rows"])
    lines = ["| rule | " + " | ".join(attacks) + " | worst (attack) |", "|---" * (len(attacks) + 2) + "|"]
    for rule in rules:
        w = wc[rule]
        worst = f"{w['worst_accuracy']:.3f} ({w['worst_attack']})" if w["worst_attack"] else "-"
        lines.append(f"| {rule} | " + " | ".join(cell(rule, a, "test_accuracy") for a in attacks) + f" | {worst} |")
    lines += ["", "| rule | backdoor success (backdoor) | backdoor success (none) | excluded malicious (mean over "
              "attacks) | excluded honest (none) | excluded honest (mean over attacks) |", "|---|---|---|---|---|---|"]
    for rule in rules:
        att = [r for r in rows if r["rule"] == rule and r["attack"] != "none"]
        em = sum(r["excluded_malicious"] for r in att) / len(att) if att else float("nan")
        eh = sum(r["excluded_honest"] for r in att) / len(att) if att else float("nan")
        lines.append(f"| {rule} | {cell(rule, 'backdoor', 'backdoor_success')} | {cell(rule, 'none', 'backdoor_success')} "
                     f"| {em:.3f} | {cell(rule, 'none', 'excluded_honest')} | {eh:.3f} |")
    return "\n".join(lines)


def merge(paths: list[str]) -> dict[str, Any]:
    """One result file from several runs of this script with the same settings (the probe's clip
    radius included; only ``workers`` may differ) and no row twice; each part's command and seconds
    are kept under ``merged_from``."""
    parts = [(p, json.loads(Path(p).read_text())) for p in paths]
    same = lambda s: {k: v for k, v in s.items() if k != "workers"}  # noqa: E731
    first = parts[0][1]
    rows: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    for path, part in parts:
        if same(part["settings"]) != same(first["settings"]):
            raise SystemExit(f"--merge: {path} was run with other settings than {parts[0][0]}")
        for r in part["rows"]:
            key = (r["rule"], r["attack"], json.dumps(r["attack_options"], sort_keys=True), r["seed"])
            if key in seen:
                raise SystemExit(f"--merge: {key} is in more than one file")
            seen.add(key)
            rows.append(r)
    rows.sort(key=lambda r: (r["rule"], r["attack"], str(r["attack_options"]), r["seed"]))
    return {"settings": first["settings"], "environment": first["environment"], "probe": first["probe"],
            "command": " ".join(sys.argv), "seconds": round(sum(part["seconds"] for _, part in parts), 1),
            "merged_from": [{"file": Path(p).name, "command": part["command"], "seconds": part["seconds"]}
                            for p, part in parts], "rows": rows, "worst_case": worst_case(rows)}


def jobs_for(rules: list[str], attacks: list[tuple[str, str | None, dict]], seeds: list[int],
             settings: dict[str, Any], output_dir: str) -> list[dict[str, Any]]:
    num_malicious = int(round(settings["malicious_fraction"] * settings["participants"]))
    clip = settings["clip_radius"]
    extra = settings.get("rule_option_overrides", {})
    return [{"rule": rule, "rule_options": {**rule_options(rule, num_malicious, clip), **extra}, "attack_row": row,
             "attack": attack, "attack_options": options, "seed": seed, "settings": settings, "output_dir": output_dir}
            for seed in seeds for rule in rules for row, attack, options in attacks]


def run_jobs(jobs: list[dict[str, Any]], workers: int, rows: list[dict[str, Any]], save) -> None:
    ctx = mp.get_context("fork")
    with ctx.Pool(workers, initializer=worker_init, maxtasksperchild=4) as pool:
        for row in pool.imap_unordered(run_one, jobs):
            rows.append(row)
            status = "ERROR" if "error" in row else f"acc {row['test_accuracy']:.4f} bd {row['backdoor_success']:.3f}"
            log.info("[%d/%d] %s / %s seed %d: %s (%.0f s)", len(rows), len(jobs), row["rule"], row["attack"],
                     row["seed"], status, row["seconds"])
            save()


def parse_rule_options(p: Any, items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs, each value JSON (a bare word is kept as a string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            p.error(f"--rule-option: expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rules", default="all", help="comma-separated registered rules (default: every one)")
    p.add_argument("--attacks", default="all", help="comma-separated attack rows (names in ATTACKS)")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--local-steps", type=int, default=10)
    p.add_argument("--width", type=int, default=16, help="small_cnn width")
    p.add_argument("--max-train-samples", type=int, default=None)
    p.add_argument("--max-test-samples", type=int, default=2000)
    p.add_argument("--honest-samples", type=int, default=3, help="m of the estimating attacks")
    p.add_argument("--seeds", default="0")
    p.add_argument("--extra-seeds", default="", help="seeds run again for credit_groups and the best baseline")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--malicious-fraction", type=float, default=0.3, help="share of malicious participants (sweeps)")
    p.add_argument("--partition", default="dirichlet_0.5", choices=["dirichlet_0.5", "iid"],
                   help="how MNIST is split across the 20 participants (sweeps)")
    p.add_argument("--dataset", default="mnist", choices=["mnist", "cifar10"],
                   help="cifar10: the JPEG CIFAR-10 of the data directory (sweeps)")
    p.add_argument("--protocol", default="fedavg", choices=["fedavg", "sflv2"],
                   help="sflv2: SplitFed v2, an epoch a round over --max-train-samples (sweeps)")
    p.add_argument("--summarize", default=None, help="print the markdown tables of this JSON and exit")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="join these result files (same settings, disjoint rows) into --json and exit")
    p.add_argument("--append", action="store_true", help="keep the rows already in --json (add other rules later)")
    p.add_argument("--rule-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option for every rule of --rules (a JSON value; e.g. min_cosine=-0.1); kept in "
                        "settings and in each row's rule_options")
    args = p.parse_args()
    if args.summarize:
        print(markdown(json.loads(Path(args.summarize).read_text())))
        return
    if args.merge:
        write_json(args.json, merge(args.merge))
        return
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    from cotrain.aggregation import AGGREGATORS

    rules = AGGREGATORS.names() if args.rules == "all" else args.rules.split(",")
    attacks = ATTACKS if args.attacks == "all" else [a for a in ATTACKS if a[0] in args.attacks.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.quick:
        rules = [r for r in rules if r in ("fedavg", "median")] or rules[:2]
        attacks = [a for a in ATTACKS if a[0] in ("none", "alie", "backdoor")]
        args.rounds, args.local_steps, args.max_train_samples, args.max_test_samples = 2, 5, 3000, 500
        seeds, args.extra_seeds = [0], ""
    settings = {"dataset": args.dataset, "data_dir": str(Path(args.data_dir).resolve()), "participants": 20,
                **({"partition": "dirichlet", "partition_options": {"alpha": 0.5}} if args.partition != "iid" else
                   {"partition": "iid", "partition_options": {}}), "partition_name": args.partition,
                "malicious_fraction": args.malicious_fraction, "rounds": args.rounds, "local_steps": args.local_steps, "batch_size": 32,
                "lr": args.lr, "momentum": args.momentum, "width": args.width, "max_train_samples": args.max_train_samples,
                "max_test_samples": args.max_test_samples, "honest_samples": args.honest_samples,
                "workers": args.workers, "quick": args.quick, "backdoor": BACKDOOR,
                **({"protocol": "sflv2"} if args.protocol == "sflv2" else {}),
                **({"rule_option_overrides": parse_rule_options(p, args.rule_option)} if args.rule_option else {})}
    rows: list[dict[str, Any]] = []
    probe: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as runs:
        torch_threads_one()
        norms = probe_update_norms(settings, runs)
    probe["honest_update_norm_median_per_round"] = norms
    settings["clip_radius"] = round(sorted(norms)[len(norms) // 2], 2)
    log.info("median honest update norm per round %s: clip radius %s", norms, settings["clip_radius"])
    if args.append and args.json and Path(args.json).exists():
        old = json.loads(Path(args.json).read_text())
        ignored = ("workers", "clip_radius")  # the radius only changes the clipping rules' options
        if {k: v for k, v in old["settings"].items() if k not in ignored} != {
                k: v for k, v in settings.items() if k not in ignored}:
            raise SystemExit(f"--append: {args.json} was written with other settings: {old['settings']}")
        done = {(r["rule"], r["attack"], json.dumps(r["attack_options"], sort_keys=True), r["seed"]) for r in old["rows"]}
        rows = [r for r in old["rows"] if "error" not in r]
        rules = [r for r in rules if not any(d[0] == r for d in done)]
        log.info("appending to %d rows; rules still to run: %s", len(rows), rules)
    t0 = time.perf_counter()

    def save() -> None:
        write_json(args.json, {"settings": settings, "environment": environment(), "command": " ".join(sys.argv),
                               "seconds": round(time.perf_counter() - t0, 1), "probe": probe, "rows": sorted(
                                   rows, key=lambda r: (r["rule"], r["attack"], str(r["attack_options"]), r["seed"])),
                               "worst_case": worst_case(rows)})

    with tempfile.TemporaryDirectory() as runs:
        run_jobs(jobs_for(rules, attacks, seeds, settings, runs), args.workers, rows, save)
        extra = [int(s) for s in args.extra_seeds.split(",") if s]
        if extra:
            wc = worst_case(rows)
            baselines = {r: v for r, v in wc.items() if not r.startswith("credit_groups") and v["worst_accuracy"]}
            best = max(baselines, key=lambda r: baselines[r]["worst_accuracy"]) if baselines else None
            chosen = [r for r in rules if r in ("credit_groups", "credit_groups_robust")] + ([best] if best else [])
            log.info("extra seeds %s for %s", extra, chosen)
            run_jobs(jobs_for(chosen, attacks, extra, settings, runs), args.workers, rows, save)
    save()
    for rule, v in worst_case(rows).items():
        log.info("%-24s clean %s  worst %s (%s)", rule, v["clean_accuracy"], v["worst_accuracy"], v["worst_attack"])


if __name__ == "__main__":
    main()
