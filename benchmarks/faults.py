"""Soak and faults: FedAvg on MNIST in process for 200 rounds with resident memory sampled every
round; a 20-round run under 30 % random dropout and 5 % corrupt uploads against the clean run of
the same seed; a `cotrain run` killed (SIGKILL) after its round-10 checkpoint, resumed with
`--resume` and compared with the uninterrupted run.

    nice -n 10 python benchmarks/faults.py --data-dir ../shared/data --json benchmarks/results/faults.json
    python benchmarks/faults.py --quick --json bench_out/faults_quick.json

JSON: {"soak": {"rss_mb": [per round], "warmup_rounds", "rss_warmup_peak_mb", "rss_growth_after_warmup_pct"
                (last round vs the warm-up's peak), "rss_peak_growth_after_warmup_pct",
                "rss_slope_mb_per_100_rounds_after_warmup", ...},
       "faults": {"per_seed": [{"seed", "clean", "faulty", "dropout_only", "corrupt_only": {
                      "final_test_accuracy", "difference_points", "uploads_aggregated_per_round",
                      "rejections_by_reason", "rejection_reasons", "rejections_explained",
                      "failures_explained", "rounds_retried", "lost_rounds", ...}}],
                  "difference_points_mean": {variant: points}, ...},
       "kill_resume": {"killed_after_round", "resumed_equal", "model_equal", "metrics_equal", "ledger_equal"},
       "goals": {...}, "met": {...}}

Goals (issue 14): resident memory flat within 5 % after warm-up; the faulty run's final accuracy
within 1 point of the clean run, every rejection explained; the resumed run equal to the
uninterrupted one; zero lost rounds.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, parser, setup_threads, write_json  # noqa: E402

import torch  # noqa: E402

from cotrain.experiment import config_from_dict, prepare, read_jsonl, run_prepared  # noqa: E402
from cotrain.experiment.config import save_config  # noqa: E402

log = logging.getLogger("benchmarks.faults")
REPO = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")
REASONS = {"holds NaN or infinite values": "nan", "has shape": "shape", "exceeds the cap": "examples"}


def rss_mb() -> float:
    """Resident memory of this process (``/proc/self/statm``), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def config(args, name: str, out: str, *, participants: int, rounds: int, width: int, local_steps: int,
           fedavg: dict | None = None, faults: dict | None = None, test: int | None = None, seed: int | None = None,
           **data: Any):
    caps = {"max_train_samples": 6000, "max_test_samples": 1000} if args.quick else {}
    return config_from_dict({
        "run": {"name": name, "seed": args.seed if seed is None else seed, "output_dir": out, "threads": args.threads},
        "data": {"dataset": "mnist", "data_dir": str(Path(args.data_dir).resolve()), "participants": participants,
                 **({"max_test_samples": test} if test else {}), **caps, **data},
        "model": {"name": "small_cnn", "options": {"width": width}},
        "fedavg": {"rounds": rounds, "local_steps": local_steps, "batch_size": 32, "lr": 0.05, "momentum": 0.9,
                   **(fedavg or {})},
        **({"faults": faults} if faults else {}),
    })


# -- (a) soak -----------------------------------------------------------------------------
def soak(args, out: str) -> dict[str, Any]:
    rounds = 20 if args.quick else args.soak_rounds
    warmup = max(1, rounds // 10)
    cfg = config(args, "soak", out, participants=5, rounds=rounds, width=8, local_steps=5, test=1000,
                 fedavg={"eval_every": 10})
    rss: list[float] = []

    def sample(done: int, total: int, record: dict | None) -> None:
        if record is not None:
            rss.append(round(rss_mb(), 2))
            if done % 20 == 0:
                log.info("soak round %d/%d: rss %.1f MiB", done, total, rss[-1])

    t0 = time.perf_counter()
    result = run_prepared(prepare(cfg), progress=sample)
    base = max(rss[:warmup])  # the footprint warm-up reached (it holds scored rounds too)
    after = rss[warmup:]
    slope = float(torch.linalg.lstsq(torch.stack([torch.arange(len(after), dtype=torch.float64),
                                                  torch.ones(len(after), dtype=torch.float64)], 1),
                                     torch.tensor(after, dtype=torch.float64)[:, None]).solution[0, 0])
    return {"rounds": rounds, "participants": 5, "local_steps": 5, "model": "small_cnn width 8", "eval_every": 10,
            "seconds": round(time.perf_counter() - t0, 1), "rss_mb": rss, "warmup_rounds": warmup,
            "rss_warmup_peak_mb": base, "rss_last_mb": rss[-1], "rss_peak_after_warmup_mb": max(after),
            "rss_slope_mb_per_100_rounds_after_warmup": round(100 * slope, 3),
            "rss_growth_after_warmup_pct": round(100 * (rss[-1] - base) / base, 2),
            "rss_peak_growth_after_warmup_pct": round(100 * (max(rss[warmup:]) - base) / base, 2),
            "final_test_accuracy": result.history[-1]["test_accuracy"]}


# -- (b) dropout and corrupt uploads ----------------------------------------------------------
FAULTS = {"drop": 0.3, "corrupt": 0.05, "corruptions": ["nan", "shape", "examples"]}
VARIANTS = {"faulty": FAULTS, "dropout_only": {"drop": 0.3},
            "corrupt_only": {"corrupt": 0.05, "corruptions": FAULTS["corruptions"]}}
FEDAVG = {"eval_every": 5, "min_participants": 5, "round_retries": 3, "max_examples": 60000}


def faulty_vs_clean(args, out: str) -> dict[str, Any]:
    """Per seed: the clean run and each faulty variant (the two kinds of fault alone apportion the
    difference); the goal is judged on the mean difference of ``faulty`` over the seeds."""
    seeds = [int(x) for x in args.fault_seeds.split(",")][: 1 if args.quick else None]
    variants = ["faulty"] if args.quick else list(VARIANTS)
    per_seed = []
    for seed in seeds:
        runs = {name: run_variant(args, out, seed, name, VARIANTS.get(name)) for name in ["clean", *variants]}
        for name in variants:
            a, c = runs[name]["final_test_accuracy"], runs["clean"]["final_test_accuracy"]
            runs[name]["difference_points"] = round(100 * (a - c), 2) if a is not None and c is not None else None
        per_seed.append({"seed": seed, **runs})
    mean = lambda name: (round(sum(d) / len(d), 2) if None not in (d := [r[name]["difference_points"]  # noqa: E731
                                                                         for r in per_seed]) else None)
    faulty = [r["faulty"] for r in per_seed]
    return {"rounds": 4 if args.quick else args.fault_rounds, "participants": 10, "partition": "dirichlet(0.5)",
            "local_steps": 10, "model": "small_cnn width 16", "fedavg": FEDAVG, "variants": {"clean": {}, **{
                v: VARIANTS[v] for v in variants}}, "seeds": seeds, "per_seed": per_seed,
            "difference_points_mean": {v: mean(v) for v in variants},
            "rejections": sum(r["rejections"] for r in faulty),
            "rejections_by_reason": dict(sum((Counter(r["rejections_by_reason"]) for r in faulty), Counter())),
            "rejections_explained": all(r[v]["rejections_explained"] for r in per_seed for v in variants),
            "failures_explained": all(r[v]["failures_explained"] for r in per_seed for v in variants),
            "lost_rounds": sum(r[v]["lost_rounds"] for r in per_seed for v in variants)}


def run_variant(args, out: str, seed: int, name: str, faults: dict | None) -> dict[str, Any]:
    """One run; what the server recorded, checked against what the participants injected."""
    rounds = 4 if args.quick else args.fault_rounds
    method = prepare(config(args, f"{name}-{seed}", out, seed=seed, participants=10, rounds=rounds, width=16,
                            local_steps=10, partition="dirichlet", partition_options={"alpha": 0.5}, fedavg=FEDAVG,
                            faults=faults))
    t0 = time.perf_counter()
    try:
        result, error = run_prepared(method), None
        history, ledger = result.history, result.ledger
    except Exception as exc:  # a lost round stops the run: report it rather than die
        error, history, ledger = f"{type(exc).__name__}: {exc}", read_jsonl(Path(out) / f"{name}-{seed}" / "metrics.jsonl"), None
    log.info("%s seed %d: final accuracy %s (%s)", name, seed, history[-1]["test_accuracy"] if history else None,
             error or "ok")
    injected = [{"participant": pid, **f} for pid, p in sorted(method.participants.items())
                for f in getattr(p, "injected", [])]
    rejections, failures = (ledger.rejections, ledger.failures) if ledger else ([], [])
    kind = lambda reason: next((k for phrase, k in REASONS.items() if phrase in reason), "other")  # noqa: E731
    rejected_as = Counter((r["round"], r["participant"], kind(r["reason"])) for r in rejections)
    corrupted = Counter((f["round"], f["participant"], f["fault"].split(":")[1]) for f in injected
                        if f["fault"].startswith("corrupt"))
    dropped = Counter((f["round"], f["participant"]) for f in injected if f["fault"] in ("drop", "crash"))
    retried = [r for r in history if r.get("retries")]
    return {
        "final_test_accuracy": history[-1]["test_accuracy"] if error is None else None,
        "accuracy_scored": {r["round"]: r["test_accuracy"] for r in history if r["test_accuracy"] == r["test_accuracy"]},
        "uploads_aggregated_per_round": round(sum(len(r["aggregation"].get("weights", {})) for r in history)
                                              / max(len(history), 1), 2),
        "seconds": round(time.perf_counter() - t0, 1), "error": error,
        "failures": len(failures),
        "failures_by_reason": dict(Counter(f["reason"].split(" of round")[0].split(" in round")[0] for f in failures)),
        "rejections": len(rejections), "rejections_by_reason": dict(Counter(kind(r["reason"]) for r in rejections)),
        "rejection_reasons": [f"round {r['round']} {r['participant']}: {r['reason']}" for r in rejections],
        "injected": dict(Counter(f["fault"] for f in injected)),
        "rejections_explained": rejected_as == corrupted and "other" not in {k for *_, k in rejected_as},
        "failures_explained": Counter((r["round"], r["participant"]) for r in failures) == dropped,
        "rounds_retried": len(retried), "retries": sum(len(r["retries"]) for r in retried),
        "lost_rounds": rounds - len(history) if error is not None else 0,
    }


# -- (c) killed and resumed -----------------------------------------------------------------
def cli(*argv: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cotrain.cli", "run", *argv, "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def checkpoint_round(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["round"])
    except Exception:  # not there yet (or replaced while read): try again
        return 0


def kill_and_resume(args, out: str) -> dict[str, Any]:
    rounds, kill_at = (4, 2) if args.quick else (args.kill_rounds, args.kill_round)
    cfg = config(args, "killed", out, participants=5, rounds=rounds, width=8, local_steps=5, test=1000)
    path = Path(out) / "kill.toml"
    save_config(cfg, path)
    run_dir = Path(out) / "killed"
    proc = cli(str(path))
    deadline = time.monotonic() + 1800
    while checkpoint_round(run_dir / "checkpoint.pt") < kill_at and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()  # reaped: its stale lock is then taken over
    killed_after = checkpoint_round(run_dir / "checkpoint.pt")
    lines_at_kill = len(read_jsonl(run_dir / "metrics.jsonl"))
    status_at_kill = json.loads((run_dir / "summary.json").read_text()).get("status")
    resumed = cli("--resume", str(run_dir))
    resumed_out, _ = resumed.communicate()
    full = cli(str(path), "--name", "uninterrupted")
    full_out, _ = full.communicate()
    full_dir = Path(out) / "uninterrupted"
    out_row: dict[str, Any] = {"rounds": rounds, "kill_after_checkpoint_of_round": kill_at, "signal": "SIGKILL",
                               "killed_after_round": killed_after, "metrics_lines_at_kill": lines_at_kill,
                               "status_at_kill": status_at_kill, "resume_exit_code": resumed.returncode,
                               "uninterrupted_exit_code": full.returncode}
    if resumed.returncode or full.returncode:
        out_row.update(resumed_equal=False, error=(resumed_out + full_out)[-2000:])
        return out_row
    ma, mb = torch.load(run_dir / "model.pt"), torch.load(full_dir / "model.pt")
    timeless = lambda p: [{k: v for k, v in r.items() if k != "seconds"} for r in read_jsonl(p / "metrics.jsonl")]  # noqa: E731
    summary = json.loads((run_dir / "summary.json").read_text())
    out_row.update(model_equal=ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma),
                   metrics_equal=timeless(run_dir) == timeless(full_dir),
                   ledger_equal=(run_dir / "ledger.jsonl").read_bytes() == (full_dir / "ledger.jsonl").read_bytes(),
                   status=summary.get("status"), resumed_after_rounds=summary.get("resumed_after_rounds"),
                   final_test_accuracy=summary.get("final_test_accuracy"))
    out_row["resumed_equal"] = out_row["model_equal"] and out_row["metrics_equal"] and out_row["ledger_equal"]
    return out_row


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.set_defaults(threads=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--soak-rounds", type=int, default=200)
    p.add_argument("--fault-rounds", type=int, default=20)
    p.add_argument("--fault-seeds", default="0,1,2", help="seeds of the faulty-vs-clean comparison (--quick: the first)")
    p.add_argument("--kill-rounds", type=int, default=20, help="rounds of the run that is killed")
    p.add_argument("--kill-round", type=int, default=10, help="kill it after this round's checkpoint")
    p.add_argument("--parts", default="soak,faults,kill", help="which parts to run")
    args = p.parse_args()
    setup_threads(args)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    parts = args.parts.split(",")
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as out:
        if "soak" in parts:  # first: the process's memory is then the soak's alone
            result["soak"] = soak(args, out)
        if "faults" in parts:
            result["faults"] = faulty_vs_clean(args, out)
        if "kill" in parts:
            result["kill_resume"] = kill_and_resume(args, out)
    goals = {"rss_peak_growth_after_warmup_pct_at_most": 5.0, "mean_accuracy_difference_points_at_most": 1.0,
             "rejections_explained": True, "resumed_equal": True, "lost_rounds": 0}
    soak_r, faults_r, kill_r = result.get("soak", {}), result.get("faults", {}), result.get("kill_resume", {})
    diff = faults_r.get("difference_points_mean", {}).get("faulty")
    met = {"rss_flat": soak_r["rss_peak_growth_after_warmup_pct"] <= 5.0 if soak_r else None,
           "accuracy_within_1_point": abs(diff) <= 1.0 if diff is not None else (False if faults_r else None),
           "rejections_explained": faults_r.get("rejections_explained"),
           "resumed_equal": kill_r.get("resumed_equal"),
           "zero_lost_rounds": faults_r.get("lost_rounds") == 0 if faults_r else None}
    result.update(goals=goals, met=met, quick=args.quick, seed=args.seed, environment=environment(),
                  command="nice -n 10 python benchmarks/faults.py --data-dir ../shared/data "
                          "--json benchmarks/results/faults.json" + (" --quick" if args.quick else ""))
    write_json(args.json, result)
    log.info("met: %s", met)


if __name__ == "__main__":
    main()
