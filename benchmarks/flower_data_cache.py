"""Seconds per exchange on Flower's deployment engine, each SuperNode's data cache off and on.

The deployment engine starts a ClientApp process per message, so without the cache every message
loads the data set and partitions it again; with it (``[run] node_cache = true``, the default) a
node does that once and later processes read its own partition back from its cache folder.
FedAvg, 3 participants, every one every round, 1 local step of a small CNN, so the exchange's
overhead dominates; MNIST (idx .gz, 60k images) and CIFAR-10 (JPEG folders, 10k images).

    python benchmarks/flower_data_cache.py --threads 1 --json benchmarks/results/flower_data_cache.json
    python benchmarks/flower_data_cache.py --quick --threads 1 --json bench_out/flower_data_cache_quick.json
    python benchmarks/flower_data_cache.py --build-only --threads 1 --json benchmarks/results/flower_data_cache_build.json

JSON: {"rows": [{"dataset", "node_cache", "repeat", "rounds", "first_round_s", "seconds_per_exchange",
       "seconds_per_exchange_min", "seconds_per_exchange_max", "round_seconds", "wall_s", "cpu_s",
       "clientapp_cpu_s", "clientapp_processes", "cpu_s_by_program"}],
       "summary": {dataset: {"off"/"on": {"seconds_per_exchange", "cpu_s", "clientapp_cpu_s_per_process"},
                             "clientapp_cpu_saved_per_process_s"}},
       "build_s": {dataset: {"load_and_partition", "cache_read", and each "_cpu"}}, ...}
``seconds_per_exchange`` is the median round time after round 1 (round 1 fills the cache); a
round is one train exchange with every node plus the server's evaluation on 500 test images.
``cpu_s`` is the CPU time of every process of the run (SuperLink, SuperNodes, ServerApp, each
ClientApp process), read by the launcher while they ran; ``clientapp_cpu_s`` that of the ClientApp
processes (one per message: the hello query's and every train message's), the part the cache
changes: on a shared machine CPU time is steadier than wall time. Cache off and on alternate,
``--repeats`` times.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, parser, setup_threads, write_json  # noqa: E402

from cotrain.experiment import ExperimentConfig, run_experiment, with_overrides  # noqa: E402

log = logging.getLogger("benchmarks.flower_data_cache")
PARTICIPANTS = 3


def make_config(dataset: str, data_dir: str, *, rounds: int, node_cache: bool, output_dir: str,
                threads: int | None) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "run": {"name": f"{dataset}-cache-{'on' if node_cache else 'off'}", "seed": 0, "output_dir": output_dir,
                "runtime": "flower-deployment", "node_cache": node_cache, "save_model": False, "threads": threads},
        "data": {"dataset": dataset, "data_dir": str(Path(data_dir).resolve()), "participants": PARTICIPANTS,
                 "max_test_samples": 500},
        "model": {"name": "small_cnn", "options": {"width": 8}},
        "fedavg": {"rounds": rounds, "participants_per_round": PARTICIPANTS, "local_steps": 1, "batch_size": 16},
    })


def build_seconds(cfg: ExperimentConfig) -> dict[str, float]:
    """One participant's data in this process, as a ClientApp process builds it: loaded and
    partitioned (a cache miss, which also stores it), then read back from the node cache (a hit);
    wall and CPU seconds of each."""
    from cotrain.experiment import setup
    from cotrain.runtime.nodecache import use_node_cache

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder, use_node_cache(folder):
        for name in ("load_and_partition", "cache_read"):
            setup._load_cached.cache_clear()  # a fresh process keeps nothing in memory
            w, c = time.perf_counter(), time.process_time()
            setup.node_data(cfg, 0)
            out[name], out[f"{name}_cpu"] = time.perf_counter() - w, time.process_time() - c
    return out


def time_run(cfg: ExperimentConfig, repeat: int) -> dict:
    t0 = time.perf_counter()
    result = run_experiment(cfg)
    wall = time.perf_counter() - t0
    history = result.history
    processes = json.loads((result.run_dir / "flower" / "logs" / "pids.json").read_text(encoding="utf-8"))
    seconds = [r["seconds"] for r in history]
    steady = seconds[1:] or seconds
    row = {"dataset": cfg.data.dataset, "node_cache": cfg.run.node_cache, "repeat": repeat, "rounds": len(history),
           "first_round_s": seconds[0], "seconds_per_exchange": statistics.median(steady),
           "seconds_per_exchange_min": min(steady), "seconds_per_exchange_max": max(steady),
           "round_seconds": seconds, "wall_s": wall, "cpu_s": processes["cpu_s"],
           "clientapp_cpu_s": processes["cpu_s_by_program"].get("flwr-clientapp"),
           "clientapp_processes": processes["processes_by_program"].get("flwr-clientapp"),
           "cpu_s_by_program": processes["cpu_s_by_program"]}
    log.info("%s, cache %s: %.2f s per exchange (round 1 %.2f s), %.1f CPU s (ClientApps %.1f s in %s processes)",
             row["dataset"], "on" if row["node_cache"] else "off", row["seconds_per_exchange"], row["first_round_s"],
             row["cpu_s"], row["clientapp_cpu_s"] or 0.0, row["clientapp_processes"])
    return row


def summarise(rows: list[dict], dataset: str) -> dict:
    """Medians over the repeats; CPU saved per ClientApp message (rounds x participants messages
    build a participant; the hello query builds none)."""
    out: dict = {}
    for cache, key in ((False, "off"), (True, "on")):
        mine = [r for r in rows if r["dataset"] == dataset and r["node_cache"] is cache]
        out[key] = {"seconds_per_exchange": statistics.median(r["seconds_per_exchange"] for r in mine),
                    "cpu_s": statistics.median(r["cpu_s"] for r in mine),
                    "clientapp_cpu_s_per_process": statistics.median(r["clientapp_cpu_s"] / r["clientapp_processes"]
                                                                     for r in mine),
                    "runs": len(mine)}
    out["clientapp_cpu_saved_per_process_s"] = (out["off"]["clientapp_cpu_s_per_process"]
                                                - out["on"]["clientapp_cpu_s_per_process"])
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--datasets", default="mnist,cifar10")
    p.add_argument("--repeats", type=int, default=2, help="pairs of runs (cache off, cache on) per data set")
    p.add_argument("--build-only", action="store_true", help="only time one participant's data build, in process")
    args = p.parse_args()
    setup_threads(args)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    rounds = 3 if args.quick else args.rounds
    datasets = ["mnist"] if args.quick else args.datasets.split(",")
    rows, builds = [], {}
    with tempfile.TemporaryDirectory() as runs:
        for dataset in datasets:
            builds[dataset] = build_seconds(make_config(dataset, args.data_dir, rounds=rounds, node_cache=True,
                                                        output_dir=runs, threads=args.threads))
            if args.build_only:
                continue
            for repeat in range(1 if args.quick else args.repeats):
                for node_cache in (False, True):
                    cfg = make_config(dataset, args.data_dir, rounds=rounds, node_cache=node_cache, output_dir=runs,
                                      threads=args.threads)
                    rows.append(time_run(with_overrides(cfg, {"run.name": f"{cfg.run.name}-{repeat}"}), repeat))
    summary = {d: summarise(rows, d) for d in datasets} if rows else {}
    write_json(args.json, {"rows": rows, "summary": summary, "build_s": builds, "participants": PARTICIPANTS,
                           "quick": args.quick, "environment": environment()})
    log.info("summary: %s", json.dumps(summary))


if __name__ == "__main__":
    main()
