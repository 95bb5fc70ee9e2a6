"""Split learning (sequential SL, SplitFed v1 / v2) against centralised training and FedAvg.

For MNIST and the CIFAR-10 jpg set with 5 and 20 agents: test accuracy, bytes per epoch read from
the ledger, the closed form's bytes per epoch (cotrain.split.cost), seconds per epoch; the
critical-path estimate of SplitFed's parallel epoch; attribute (here: class label) inference from
the activations the centre receives; the round-trip latency of a 64x1024 float32 tensor over the
torch.distributed.rpc channel; and one PNG of the communication crossover for two models.

    python benchmarks/split_learning.py --quick --json runs/split_quick.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from cotrain.data import load_dataset, partition
from cotrain.data.base import ArrayDataset
from cotrain.federated import FedAvgParticipant, FedAvgSettings, evaluate, run_fedavg
from cotrain.models import build_model
from cotrain.runtime import InProcessGrid
from cotrain.seeding import torch_generator
from cotrain.split import (SplitAgent, SplitSettings, communication_model, epoch_batches, method_bytes, run_split,
                           split_model)
from cotrain.split.launch import launch
from cotrain.audit.split_leakage import ActivationRecorder, attribute_leakage, true_attribute
from cotrain.runtime.rpc import EchoAgent, round_trip_times

METHODS = ("centralised", "sl", "sflv1", "sflv2", "fedavg")
VARIANT = {"sl": "sequential", "sflv1": "sflv1", "sflv2": "sflv2"}
MODEL = {"name": "small_cnn", "width": 16}
CUT = "conv1"
# The second model of the crossover plot (formula only): a ResNet cut after stage3 on CIFAR-10.
RESNET = {"name": "resnet", "width": 16, "cut": "stage3"}


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("COTRAIN_DATA", str(Path(__file__).resolve().parents[2]
                                                                             / "shared" / "data")))
    p.add_argument("--json", default="runs/split_learning.json", help="results JSON (the PNG goes beside it)")
    p.add_argument("--quick", action="store_true", help="about a minute: 1,000 train samples, 1 epoch")
    p.add_argument("--datasets", nargs="+", default=["mnist", "cifar10"])
    p.add_argument("--agents", nargs="+", type=int, default=[5, 20])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-samples", type=int, default=10000, help="random training subset (0: all)")
    p.add_argument("--test-samples", type=int, default=2000, help="random test subset (0: all)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--leakage-samples", type=int, default=1000, help="activations scored, and auxiliary samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--process-timing", type=int, default=0, metavar="K",
                   help="also time one epoch of sl and sflv2 with the centre and K agents as separate processes "
                        "(MNIST, --train-samples samples)")
    args = p.parse_args()
    if args.quick:
        args.epochs, args.train_samples, args.test_samples, args.leakage_samples = 1, 1000, 500, 300
    return args


def subsample(data: ArrayDataset, n: int, seed: int, name: str) -> ArrayDataset:
    if n <= 0 or n >= len(data):
        return data
    return data.subset(torch.randperm(len(data), generator=torch_generator(seed, "benchmark", name))[:n])


def run_centralised(train: ArrayDataset, test: ArrayDataset, args: argparse.Namespace) -> dict:
    model = build_model(MODEL["name"], input_shape=train.input_shape, num_classes=train.num_classes,
                        seed=args.seed, width=MODEL["width"])
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    t0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        for idx in epoch_batches(len(train), args.batch_size, torch_generator(args.seed, "central", epoch)):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(train.x[idx]), train.y[idx]).backward()
            opt.step()
    seconds = (time.perf_counter() - t0) / args.epochs
    return {"test_accuracy": evaluate(model, test)["accuracy"], "bytes": [0] * args.epochs,
            "seconds_per_epoch": seconds, "critical_path_seconds_per_epoch": seconds}


def run_split_method(method: str, shards: list[ArrayDataset], test: ArrayDataset, aux: ArrayDataset,
                     args: argparse.Namespace) -> dict:
    def factory():
        return build_model(MODEL["name"], input_shape=test.input_shape, num_classes=test.num_classes,
                           seed=args.seed, width=MODEL["width"])

    agents = {f"agent{k:02d}": SplitAgent(f"agent{k:02d}", model_factory=factory, train_data=shard, seed=args.seed,
                                          cut=CUT) for k, shard in enumerate(shards)}
    grid = InProcessGrid(agents)
    model = factory()
    recorder = ActivationRecorder(epoch=args.epochs, limit=args.leakage_samples)
    settings = SplitSettings(variant=VARIANT[method], cut=CUT, epochs=args.epochs, batch_size=args.batch_size,
                             lr=args.lr)
    history = run_split(grid, model, settings, seed=args.seed, observers=[recorder])
    ids = sorted(recorder.received)
    observed = torch.cat([recorder.stacked(pid) for pid in ids])
    truth = torch.cat([true_attribute(agents[pid], recorder, "label") for pid in ids])
    front = split_model(model, CUT)[0]["front"]
    leak = attribute_leakage(front, aux.x, aux.y, observed, truth, attribute="label", seed=args.seed)
    return {"test_accuracy": evaluate(model, test)["accuracy"], "bytes": [r.bytes for r in history],
            "seconds_per_epoch": statistics.mean(r.seconds for r in history),
            "critical_path_seconds_per_epoch": statistics.mean(r.critical_path_seconds for r in history),
            "leakage": leak.to_json()}


def run_fedavg_method(shards: list[ArrayDataset], test: ArrayDataset, args: argparse.Namespace) -> dict:
    def factory():
        return build_model(MODEL["name"], input_shape=test.input_shape, num_classes=test.num_classes,
                           seed=args.seed, width=MODEL["width"])

    grid = InProcessGrid({f"agent{k:02d}": FedAvgParticipant(f"agent{k:02d}", model_factory=factory, train_data=s,
                                                             seed=args.seed) for k, s in enumerate(shards)})
    steps = min(len(s) for s in shards) // args.batch_size  # one local epoch (the smallest shard's)
    settings = FedAvgSettings(rounds=args.epochs, local_steps=max(steps, 1), batch_size=args.batch_size, lr=args.lr)
    model = factory()
    history = run_fedavg(grid, model, settings, seed=args.seed)
    return {"test_accuracy": evaluate(model, test)["accuracy"],
            "bytes": [grid.ledger.total_bytes(round=r.round) for r in history],
            "seconds_per_epoch": statistics.mean(r.seconds for r in history),
            "critical_path_seconds_per_epoch": None}


def round_trip(repeats: int) -> dict:
    times = launch(functools.partial(round_trip_times, agent_id="echo", shape=(64, 1024), repeats=repeats),
                   {"echo": functools.partial(EchoAgent, "echo")}, timeout=120)
    ms = sorted(t * 1e3 for t in times)
    return {"shape": [64, 1024], "dtype": "float32", "repeats": repeats, "median_ms": statistics.median(ms),
            "p90_ms": ms[int(0.9 * (len(ms) - 1))], "min_ms": ms[0], "goal_ms": 5.0}


def _process_agent(pid: str, k: int, agents: int, args: argparse.Namespace) -> SplitAgent:
    train = subsample(load_dataset("mnist", data_dir=args.data_dir).train, args.train_samples, args.seed,
                      "mnist-train")
    shard = train.subset(partition("iid", train, agents, seed=args.seed)[k])
    return SplitAgent(pid, model_factory=functools.partial(
        build_model, MODEL["name"], input_shape=train.input_shape, num_classes=10, seed=args.seed,
        width=MODEL["width"]), train_data=shard, seed=args.seed, cut=CUT)


def _process_centre(grid, variant: str, args: argparse.Namespace) -> dict:
    model = build_model(MODEL["name"], input_shape=(1, 28, 28), num_classes=10, seed=args.seed, width=MODEL["width"])
    settings = SplitSettings(variant=variant, cut=CUT, epochs=2, batch_size=args.batch_size, lr=args.lr)
    _, record = run_split(grid, model, settings, seed=args.seed)  # the second epoch: no first-call costs
    return {"seconds": record.seconds, "bytes": record.bytes}


def process_timing(agents: int, args: argparse.Namespace) -> list[dict]:
    """Wall-clock seconds of the second of two epochs, centre and agents in separate processes (one thread each)."""
    out = []
    for method in ("sl", "sflv2"):
        factories = {f"agent{k:02d}": functools.partial(_process_agent, f"agent{k:02d}", k, agents, args)
                     for k in range(agents)}
        res = launch(functools.partial(_process_centre, variant=VARIANT[method], args=args), factories,
                     timeout=580, threads=1)
        out.append({"method": method, "agents": agents, "processes": agents + 1, "train_samples": args.train_samples,
                    "seconds_per_epoch": res["seconds"], "bytes_per_epoch": res["bytes"]})
        print(f"processes: mnist K={agents} {method:6s} {res['seconds']:.2f} s/epoch, {res['bytes']} bytes", flush=True)
    return out


def crossover_plot(rows: list[dict], formulas: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(formulas), figsize=(6 * len(formulas), 4.2), squeeze=False)
    ks = [int(round(10 ** (i / 20))) for i in range(0, 81)]
    for ax, (label, f) in zip(axes[0], formulas.items()):
        cm = f["model"]
        ax.plot(ks, [cm.split_bytes(k) for k in ks], label="split learning: 2pq s_a + p s_y + 2K beta|W|")
        ax.plot(ks, [cm.fedavg_bytes(k) for k in ks], label="FedAvg: 2K|W|")
        k_star = cm.crossover_agents()
        if k_star < ks[-1]:
            ax.axvline(k_star, color="grey", ls=":", label=f"crossover K* = {k_star:.0f}")
        for r in rows:
            if r["dataset"] == f.get("dataset") and r["method"] in ("sl", "fedavg"):
                ax.scatter([r["agents"]], [r["bytes_per_epoch"]], marker="o" if r["method"] == "sl" else "s",
                           color="C0" if r["method"] == "sl" else "C1", zorder=3)
        ax.set(xscale="log", yscale="log", xlabel="agents K", ylabel="bytes per epoch", title=label)
        ax.legend(fontsize=7)
    fig.suptitle("Bytes per epoch: lines from the closed form, dots read from the ledger")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    args = arguments()
    torch.set_num_threads(args.threads)
    rows, extras, formulas = [], [], {}
    for name in args.datasets:
        splits = load_dataset(name, data_dir=args.data_dir)
        train = subsample(splits.train, args.train_samples, args.seed, f"{name}-train")
        test = subsample(splits.test, args.test_samples, args.seed, f"{name}-test")
        aux = subsample(splits.test, args.leakage_samples, args.seed + 1, f"{name}-aux")
        probe = build_model(MODEL["name"], input_shape=train.input_shape, num_classes=train.num_classes,
                            seed=args.seed, width=MODEL["width"])
        cm = communication_model(probe, train.input_shape, len(train), CUT)
        formulas[f"{name}: {MODEL['name']} w{MODEL['width']} cut {CUT} (q={cm.cut_values}, p={cm.samples})"] = {
            "model": cm, "dataset": name}
        if name == "cifar10":
            resnet = build_model(RESNET["name"], input_shape=train.input_shape, num_classes=10, width=RESNET["width"])
            rm = communication_model(resnet, train.input_shape, len(train), RESNET["cut"])
            formulas[f"{name}: resnet w{RESNET['width']} cut {RESNET['cut']} (q={rm.cut_values}, p={rm.samples})"] = {
                "model": rm}
        for agents in args.agents if set(args.methods) - {"centralised"} else []:
            shards = [train.subset(idx) for idx in partition("iid", train, agents, seed=args.seed)]
            for method in args.methods:
                if method == "centralised":
                    continue
                out = (run_fedavg_method(shards, test, args) if method == "fedavg"
                       else run_split_method(method, shards, test, aux, args))
                rows.append(_row(name, agents, method, out, cm))
                extras.append(_extra(rows[-1], out))
                _say(rows[-1], extras[-1])
                write(args, rows, extras, formulas, None)
        if "centralised" in args.methods:
            out = run_centralised(train, test, args)
            rows.append(_row(name, 1, "centralised", out, cm))
            extras.append(_extra(rows[-1], out))
            _say(rows[-1], extras[-1])
            write(args, rows, extras, formulas, None)
    if args.process_timing:
        extras.append({"process_timing": process_timing(args.process_timing, args)})
    latency = round_trip(50 if args.quick else 300)
    print(f"round trip 64x1024 float32 over torch.distributed.rpc: median {latency['median_ms']:.2f} ms, "
          f"p90 {latency['p90_ms']:.2f} ms, min {latency['min_ms']:.2f} ms", flush=True)
    path, png = write(args, rows, extras, formulas, latency)
    crossover_plot(rows, formulas, png)
    print(f"wrote {path} and {png}")


def write(args: argparse.Namespace, rows: list[dict], extras: list[dict], formulas: dict[str, dict],
          latency: dict | None) -> tuple[Path, Path]:
    """Write the JSON (again after every row, so an interrupted run keeps what it measured)."""
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = path.with_suffix(".png")
    out = {"results": rows, "details": extras, "round_trip": latency, "plot": str(png),
           "crossover": {k: {"crossover_agents": v["model"].crossover_agents(), "beta": v["model"].beta,
                             "model_bytes": v["model"].model_bytes, "cut_values": v["model"].cut_values,
                             "samples": v["model"].samples} for k, v in formulas.items()},
           "config": dict(vars(args)) | {"model": MODEL, "cut": CUT, "partition": "iid",
                                         "optimizer": "SGD, momentum 0", "machine": platform.platform()}}
    path.write_text(json.dumps(out, indent=2))
    return path, png


def _row(dataset: str, agents: int, method: str, out: dict, cm) -> dict:
    per_epoch = out["bytes"]
    return {"dataset": dataset, "agents": agents, "method": method, "test_accuracy": out["test_accuracy"],
            "bytes_per_epoch": (sum(per_epoch) // len(per_epoch) if sum(per_epoch) % len(per_epoch) == 0
                                        else sum(per_epoch) / len(per_epoch)),
            "formula_bytes_per_epoch": method_bytes(method, cm, agents),
            "seconds_per_epoch": out["seconds_per_epoch"]}


def _extra(row: dict, out: dict) -> dict:
    return {"dataset": row["dataset"], "agents": row["agents"], "method": row["method"],
            "bytes_every_epoch": out["bytes"],
            "ledger_equals_formula": all(b == row["formula_bytes_per_epoch"] for b in out["bytes"]),
            "critical_path_seconds_per_epoch": out["critical_path_seconds_per_epoch"],
            "label_leakage": out.get("leakage")}


def _say(row: dict, extra: dict) -> None:
    leak = extra["label_leakage"]
    cp = extra["critical_path_seconds_per_epoch"]
    print(f"{row['dataset']:8s} K={row['agents']:3d} {row['method']:11s} acc {row['test_accuracy']:.4f}  "
          f"bytes/epoch {row['bytes_per_epoch']:.0f} (formula {row['formula_bytes_per_epoch']}, "
          f"equal: {extra['ledger_equals_formula']})  s/epoch {row['seconds_per_epoch']:.2f}"
          + (f" (critical path {cp:.2f})" if cp is not None else "")
          + (f"  label from activations {leak['accuracy']:.3f} (majority {leak['majority_baseline']:.3f})"
             if leak else ""), flush=True)


if __name__ == "__main__":
    main()
