"""FedAvg on MNIST: 10 participants, Dirichlet(0.5) label skew, the small CNN, 20 rounds.

Also times one FedAvg round on each runtime (in process, Flower simulation, Flower deployment).

    python benchmarks/fedavg.py --data-dir ../shared/data --json bench_out/fedavg.json
    python benchmarks/fedavg.py --quick --json bench_out/fedavg_quick.json

JSON: {"final_test_accuracy", "rounds": [{"round", "test_accuracy", "seconds", "bytes_up", "bytes_down"}],
       "seconds_per_round": {"inprocess", "flower_simulation", "flower_deployment"}, ...}
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, parser, setup_threads, write_json  # noqa: E402

from cotrain.experiment import ExperimentConfig, run_experiment, with_overrides  # noqa: E402

log = logging.getLogger("benchmarks.fedavg")
RUNTIMES = {"inprocess": "inprocess", "flower_simulation": "flower-simulation",
            "flower_deployment": "flower-deployment"}


def make_config(args, output_dir: str) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "run": {"name": "bench-fedavg", "seed": args.seed, "output_dir": output_dir, "save_model": False,
                "threads": args.threads, "timeout_s": 900},
        "data": {"dataset": "mnist", "data_dir": str(Path(args.data_dir).resolve()), "participants": 10,
                 "partition": "dirichlet", "partition_options": {"alpha": 0.5},
                 **({"max_train_samples": 6000, "max_test_samples": 2000} if args.quick else {})},
        "model": {"name": "small_cnn", "options": {"width": 32}},
        "fedavg": {"rounds": 3 if args.quick else args.rounds,
                   "local_steps": min(args.local_steps, 10) if args.quick else args.local_steps, "batch_size": 32,
                   "lr": args.lr, "momentum": 0.9},
    })


def log_round(done: int, total: int, record) -> None:
    if record is not None:
        log.info("round %d/%d: test accuracy %.4f (%.1f s)", done, total, record["test_accuracy"], record["seconds"])


def time_flower(cfg: ExperimentConfig, engine: str, rounds: int) -> float | None:
    """Seconds per round of the same experiment on a Flower engine (None, with the reason logged, if it fails)."""
    t0 = time.perf_counter()
    try:
        run_experiment(with_overrides(cfg, {"run.runtime": RUNTIMES[engine], "fedavg.rounds": rounds,
                                            "run.name": engine}))
    except Exception:  # a benchmark reports what failed rather than dying
        log.error("%s failed:\n%s", engine, traceback.format_exc())
        return None
    return (time.perf_counter() - t0) / rounds


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--local-steps", type=int, default=50)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--flower-rounds", type=int, default=2, help="rounds timed on each Flower engine")
    p.add_argument("--engines", default="inprocess,flower_simulation,flower_deployment")
    args = p.parse_args()
    setup_threads(args)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)  # our progress only, not every library's INFO lines
    engines = args.engines.split(",")
    with tempfile.TemporaryDirectory() as runs:
        cfg = make_config(args, runs)
        rounds = [{k: r[k] for k in ("round", "test_accuracy", "seconds", "bytes_up", "bytes_down")}
                  for r in run_experiment(cfg, progress=log_round).history]
        seconds = {"inprocess": sum(r["seconds"] for r in rounds) / len(rounds)}
        flower_rounds = 1 if args.quick else args.flower_rounds
        for engine in ("flower_simulation", "flower_deployment"):
            seconds[engine] = time_flower(cfg, engine, flower_rounds) if engine in engines else None
    result = {
        "final_test_accuracy": rounds[-1]["test_accuracy"],
        "rounds": rounds,
        "seconds_per_round": seconds,
        "config": cfg.model_dump(mode="json", exclude={"run": {"output_dir"}}),
        "quick": args.quick,
        "goal": {"final_test_accuracy": 0.98, "within_rounds": 20},
        "environment": environment(),
    }
    write_json(args.json, result)
    log.info("final test accuracy %.4f; seconds per round %s", result["final_test_accuracy"], seconds)


if __name__ == "__main__":
    main()
