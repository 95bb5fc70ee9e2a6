"""Seconds per FedAvg round of MNIST federations on every core: cotrain sequential and parallel, the
bare torch loop, Flower simulation and pfl 0.6, side by side (issue 13).

Jobs (small CNN width 16, every participant every round, evaluation on 2,000 test images each round):
``compute``: 160 samples a participant, 5 local steps of batch 32; ``overhead``: 1 local step of
batch 8. N = 10, 100, 1000 (N = 1000 draws its 160,000 samples from MNIST with replacement).
Systems: ``floor`` (the same steps in a bare torch loop, one process), ``cotrain_sequential``
(in process), ``cotrain_parallel`` (``run.runtime = "parallel"``, workers = cores),
``flower_simulation`` (cotrain on Flower's simulation engine, actors = cores) and ``pfl`` (Apple's
pfl 0.6 from its own virtual environment ``--pfl-python``, under ``torchrun``, workers = cores).
Every process runs one torch thread. Each measurement is a fresh process: median, min and max of
3 runs (N = 1000: one run, over its 3 rounds); start-up (process start to the first round) apart;
peak memory is the proportional set size (PSS: shared pages counted once) summed over every
process of the run, sampled every 0.25 s.

    nice -n 10 python benchmarks/simulation_throughput.py --json benchmarks/results/simulation_throughput.json
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, parser, write_json  # noqa: E402

log = logging.getLogger("benchmarks.simulation_throughput")
HERE = Path(__file__).resolve().parent
JOBS = {"compute": {"local_steps": 5, "batch_size": 32}, "overhead": {"local_steps": 1, "batch_size": 8}}
SYSTEMS = ("floor", "cotrain_sequential", "cotrain_parallel", "flower_simulation", "pfl")
SAMPLES, TEST, LR, SEED = 160, 2000, 0.05, 0
TAG = "COTRAIN_BENCH_TAG"
ROUND_LIMIT_S = 600.0  # the rule: a system slower than 10 minutes a round at N = 1000 is stopped


def experiment_config(job: str, n: int, rounds: int, data_dir: str, out: str, runtime: str, workers: int) -> Any:
    from cotrain.experiment import config_from_dict

    sizes = ({"samples_with_replacement": SAMPLES * n} if SAMPLES * n > 60000 else {"max_train_samples": SAMPLES * n})
    return config_from_dict({
        "run": {"name": runtime, "seed": SEED, "output_dir": out, "save_model": False, "threads": 1,
                "runtime": runtime, "timeout_s": 3600.0, **({"workers": workers} if runtime == "parallel" else {})},
        "data": {"dataset": "mnist", "data_dir": data_dir, "participants": n, "partition": "iid",
                 "max_test_samples": TEST, **sizes},
        "model": {"name": "small_cnn", "options": {"width": 16}},
        "fedavg": {"rounds": rounds, "lr": LR, **JOBS[job]},
    })


# ---------------------------------------------------------------- one measurement, in its own process

def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one system once; seconds of each round, start-up from ``spec["launched"]``, final accuracy."""
    import torch

    torch.set_num_threads(1)
    system, launched = spec["system"], spec["launched"]
    with tempfile.TemporaryDirectory() as out:
        cfg = experiment_config(spec["job"], spec["n"], spec["rounds"], spec["data_dir"], out,
                                {"cotrain_parallel": "parallel", "flower_simulation": "flower-simulation"}.get(
                                    system, "inprocess"), spec["workers"])
        if system == "floor":
            return floor(cfg, launched)
        if system == "pfl":
            return pfl(cfg, spec, out)
        from cotrain.experiment import run_experiment

        marks: list[float] = []
        cpu: list[dict[int, float]] = []

        def progress(done: int, total: int, record: Any) -> None:
            marks.append(time.time())
            cpu.append(tree_cpu())

        result = run_experiment(cfg, progress=progress)
        seconds = [r["seconds"] for r in result.history]
        end = time.time()
        # in process: up to the first round's start; on Flower the records come back at the end,
        # so start-up there is everything but the rounds (shut-down included)
        startup = (marks[1] - seconds[0] - launched if system != "flower_simulation"
                   else end - sum(seconds) - launched)
        return {"rounds": seconds, "startup_s": startup, "final_accuracy": result.history[-1]["test_accuracy"],
                **({"cpu_rounds": critical_cpu(cpu[1:])} if system != "flower_simulation" else {})}


def tree_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of this process and each of its descendants, by pid."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, seconds = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry.name)], seconds[int(entry.name)] = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick
    mine, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier and p not in mine]
        mine.update(kids)
        frontier = kids
    return {p: seconds[p] for p in mine}


def critical_cpu(marks: list[dict[int, float]]) -> list[float]:
    """Per round after the first (between consecutive round ends; the first holds the workers'
    start-up), this process's CPU seconds plus the busiest other process's: the round's wall time
    were every process on a core of its own, which contention on a shared machine hides."""
    me, out = os.getpid(), []
    for before, after in zip(marks, marks[1:]):
        delta = {p: c - before.get(p, 0.0) for p, c in after.items()}
        out.append(delta.get(me, 0.0) + max((d for p, d in delta.items() if p != me), default=0.0))
    return out


def floor(cfg: Any, launched: float) -> dict[str, Any]:
    """The same rounds as a bare torch loop: same data, model, batches, averaging and evaluation."""
    import torch
    from torch.nn.functional import cross_entropy

    from cotrain.experiment.prepare import prepare_data
    from cotrain.experiment.setup import build_global_model, participant_id
    from cotrain.federated.training import batch_order
    from cotrain.seeding import torch_generator

    data = prepare_data(cfg)
    model = build_global_model(cfg, data)
    local = [data.participant_data(i) for i in range(len(data.parts))]
    test, s = data.splits.test, cfg.fedavg
    examples = sum(len(d) for d in local)
    seconds, accuracy = [], float("nan")
    startup = time.time() - launched
    cpu = []
    for rnd in range(1, s.rounds + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        start = {k: v.clone() for k, v in model.state_dict().items()}
        total = {k: torch.zeros_like(v) for k, v in start.items()}
        for i, d in enumerate(local):
            model.load_state_dict(start)
            opt = torch.optim.SGD(model.parameters(), lr=s.lr)
            model.train()
            for idx in batch_order(len(d), s.batch_size, s.local_steps,
                                   torch_generator(SEED, "batches", participant_id(i), rnd)):
                opt.zero_grad(set_to_none=True)
                cross_entropy(model(d.x[idx]), d.y[idx]).backward()
                opt.step()
            for k, v in model.state_dict().items():
                total[k] += v * (len(d) / examples)
        model.load_state_dict(total)
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(test.x[j:j + 1024]).argmax(1) == test.y[j:j + 1024]).sum())
                          for j in range(0, len(test), 1024))
        accuracy = correct / len(test)
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"rounds": seconds, "startup_s": startup, "final_accuracy": accuracy, "cpu_rounds": cpu[1:]}


def pfl(cfg: Any, spec: dict[str, Any], out: str) -> dict[str, Any]:
    """Hand the same data, initial model and steps to ``_pfl_throughput.py`` in pfl's environment."""
    import torch

    from cotrain.experiment.prepare import prepare_data
    from cotrain.experiment.setup import build_global_model

    data = prepare_data(cfg)
    payload = Path(out) / "pfl_data.pt"
    torch.save({"x": data.splits.train.x, "y": data.splits.train.y, "parts": [torch.as_tensor(p) for p in data.parts],
                "test_x": data.splits.test.x, "test_y": data.splits.test.y,
                "init": [p.detach() for p in build_global_model(cfg, data).parameters()],
                "rounds": cfg.fedavg.rounds, "lr": cfg.fedavg.lr, "local_steps": cfg.fedavg.local_steps,
                "batch_size": cfg.fedavg.batch_size, "launched": spec["launched"]}, payload)
    result = Path(out) / "pfl_result.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    cmd = [spec["pfl_python"], "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={spec['workers']}",
           str(HERE / "_pfl_throughput.py"), str(payload), str(result)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pfl exited with {done.returncode}: {done.stderr[-2000:]}")
    return json.loads(result.read_text())


# ---------------------------------------------------------------- the parent: launch, watch memory, summarise

def pss_mb(tag: str) -> float:
    """Proportional set size of every live process carrying ``tag`` in its environment, in MB."""
    total = 0
    needle = f"{TAG}={tag}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            for line in (entry / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def measure(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """One run of one system in a fresh process; adds ``peak_rss_mb`` (summed PSS) or ``error``."""
    tag = uuid.uuid4().hex
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        spec = {**spec, "launched": time.time()}
        env = {**os.environ, TAG: tag, "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec), "--json", str(out)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        peak = [0.0]

        def watch() -> None:
            while proc.poll() is None:
                peak[0] = max(peak[0], pss_mb(tag))
                time.sleep(0.25)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_tagged(tag)
            proc.communicate()
            return {"error": f"stopped after {timeout_s:.0f} s (over {ROUND_LIMIT_S:.0f} s a round)",
                    "peak_rss_mb": round(peak[0], 1)}
        finally:
            watcher.join(timeout=2)
            kill_tagged(tag)  # whatever the run left behind (Ray workers)
        if proc.returncode != 0 or not out.exists():
            return {"error": (err or "")[-1500:], "peak_rss_mb": round(peak[0], 1)}
        return {**json.loads(out.read_text()), "peak_rss_mb": round(peak[0], 1)}


def kill_tagged(tag: str) -> None:
    needle = f"{TAG}={tag}".encode()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and needle in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), 9)
        except OSError:
            continue


def row(job: str, system: str, n: int, workers: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in runs if "error" not in r]
    base = {"job": job, "system": system, "n": n, "workers": 1 if system in ("floor", "cotrain_sequential") else workers,
            "threads": 1, "runs": len(runs), "rounds_per_run": len(runs[0].get("rounds", [])) if runs else 0}
    if not good:
        return {**base, "seconds_per_round": None, "seconds_per_round_min": None, "seconds_per_round_max": None,
                "startup_s": None, "peak_rss_mb": max((r.get("peak_rss_mb", 0) for r in runs), default=None),
                "final_accuracy": None, "error": runs[-1]["error"] if runs else "not run"}
    # several runs: each run's mean round; one run: its rounds
    values = [statistics.fmean(r["rounds"]) for r in good] if len(good) > 1 else good[0]["rounds"]
    cpu = [c for r in good for c in r.get("cpu_rounds", [])]
    base["cpu_seconds_per_round"] = round(statistics.median(cpu), 4) if cpu else None
    return {**base, "seconds_per_round": round(statistics.median(values), 4),
            "seconds_per_round_min": round(min(values), 4), "seconds_per_round_max": round(max(values), 4),
            "startup_s": round(statistics.median(r["startup_s"] for r in good), 2),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in good),
            "final_accuracy": round(statistics.median(r["final_accuracy"] for r in good), 4),
            **({"errors": [r["error"][-300:] for r in runs if "error" in r]} if len(good) < len(runs) else {})}


def with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    floors = {(r["job"], r["n"]): r["seconds_per_round"] for r in rows if r["system"] == "floor"}
    for r in rows:
        f, s = floors.get((r["job"], r["n"])), r["seconds_per_round"]
        r["ratio_to_floor"] = round(s / f, 3) if f and s else None
    return rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--child", default=None, help=argparse_hidden())
    p.add_argument("--cells", default="compute:10,compute:100,overhead:10,overhead:100,overhead:1000,compute:1000",
                   help="job:N pairs, measured in this order (the costliest last)")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel workers, Flower actors, pfl ranks")
    p.add_argument("--runs", type=int, default=3, help="fresh runs per measurement below N = 1000")
    p.add_argument("--pfl-python", default="/work/pflvenv/bin/python", help="python of pfl's own virtual environment")
    p.add_argument("--table", default=None, help="print the markdown table of a results JSON and exit")
    p.add_argument("--big-rounds", type=int, default=3, help="rounds of the one run at N = 1000")
    p.add_argument("--append", action="store_true", help="keep the rows already in --json; measure only the rest")
    args = p.parse_args()
    if args.child:
        write_json(args.json, child(json.loads(args.child)))
        return
    if args.table:
        print(markdown_table(json.loads(Path(args.table).read_text())["rows"]))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cells = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cells.split(",")]
    if args.quick:
        cells = [(job, n) for job, n in cells if n == 10]
    systems = args.systems.split(",")
    load_start, started = os.getloadavg(), time.time()
    notes, rows, earlier = [], [], {}
    if args.append and args.json and Path(args.json).exists():
        before = json.loads(Path(args.json).read_text())
        rows, notes = [r for r in before["rows"] if r["seconds_per_round"] is not None], before["notes"]
        load_start, earlier = tuple(before["load_average"]["start"]), before
        started -= before["wall_s"]
    if "pfl" in systems and not Path(args.pfl_python).exists():
        systems.remove("pfl")
        notes.append(f"pfl skipped: no {args.pfl_python} (python3 -m venv /work/pflvenv && "
                     "/work/pflvenv/bin/pip install torch==2.13.0 pfl==0.6.0)")
    data_dir = str(Path(args.data_dir).resolve())
    for job, n in cells:
        rounds, runs = (args.big_rounds, 1) if n >= 1000 else ((2, 1) if args.quick else (2, args.runs))
        for system in systems:
            if any((r["job"], r["system"], r["n"]) == (job, system, n) for r in rows):
                continue
            spec = {"job": job, "system": system, "n": n, "rounds": rounds, "workers": args.workers,
                    "data_dir": data_dir, "pfl_python": args.pfl_python}
            measured = []
            for i in range(runs):
                log.info("%s %s N=%d run %d/%d", job, system, n, i + 1, runs)
                measured.append(measure(spec, timeout_s=300 + rounds * ROUND_LIMIT_S))
                if "error" in measured[-1]:
                    log.warning("%s", measured[-1]["error"][-500:])
                    break
            rows.append(row(job, system, n, args.workers, measured))
            log.info("%s", rows[-1])
            write_json(args.json, summary(args, rows, notes, load_start, started, partial=True, earlier=earlier))
    write_json(args.json, summary(args, rows, notes, load_start, started, partial=False, earlier=earlier))


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Seconds per round (median, min-max), x floor, start-up, peak memory and accuracy, by job and N."""
    lines = ["| job | N | system | workers | s / round (min-max) | x floor | CPU s / round | start-up s | peak MB "
             "| accuracy |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["seconds_per_round"] is None:
            why = r.get("error", "").strip().splitlines()
            lines.append(f"| {r['job']} | {r['n']} | {r['system']} | {r['workers']} | not measured: "
                         f"{why[0][:80] if why else '?'} | | | | {r.get('peak_rss_mb') or ''} | |")
            continue
        ratio = f"{r['ratio_to_floor']:.2f}" if r.get("ratio_to_floor") is not None else "-"
        cpu = f"{r['cpu_seconds_per_round']:.2f}" if r.get("cpu_seconds_per_round") is not None else "-"
        lines.append(f"| {r['job']} | {r['n']} | {r['system']} | {r['workers']} | {r['seconds_per_round']:.2f} "
                     f"({r['seconds_per_round_min']:.2f}-{r['seconds_per_round_max']:.2f}) | "
                     f"{ratio} | {cpu} | {r['startup_s']:.1f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['final_accuracy']:.4f} |")
    return "\n".join(lines)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


def summary(args: Any, rows: list[dict[str, Any]], notes: list[str], load_start: tuple, started: float, *,
            partial: bool, earlier: dict[str, Any]) -> dict[str, Any]:
    command = "nice -n 10 python benchmarks/simulation_throughput.py " + " ".join(sys.argv[1:])
    return {"rows": with_ratios([dict(r) for r in rows]), "quick": args.quick, "partial": partial, "notes": notes,
            "commands": earlier.get("commands", [earlier["command"]] if "command" in earlier else []) + [command],
            "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
            "wall_s": round(time.time() - started, 1),
            "setup": {"dataset": "mnist", "model": "small_cnn width 16", "samples_per_participant": SAMPLES,
                      "test_samples": TEST, "lr": LR, "jobs": JOBS, "memory": "peak summed PSS of all processes",
                      "threads_per_process": 1},
            "environment": environment()}


if __name__ == "__main__":
    main()
