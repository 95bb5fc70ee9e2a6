"""Benchmark: estimating an upload's batch size B when its metadata lacks it (gradient audit).

The same setting as ``feature_reconstruction.py`` (a CNN trained on the task, an early and a late
checkpoint, the server's 2,000 auxiliary training samples), but many batches per B, so the
estimator's spread shows. Two batch regimes: ``iid`` (uniform from the test split) and
``two_classes`` (a non-IID participant: every sample from two random classes). Each row:
the true B, the estimates, and their ratio to B (min, median, max).

    python benchmarks/batch_size_estimation.py --quick --json bench_out/batch_size_estimation.json
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _audit_common as common  # noqa: E402

from cotrain.audit.batch_size import estimate_batch_size  # noqa: E402
from cotrain.audit.threat_model import simulate_upload  # noqa: E402


def batch_indices(labels: torch.Tensor, b: int, regime: str, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    if regime == "iid":
        return torch.randperm(len(labels), generator=gen)[:b]
    classes = torch.randperm(num_classes, generator=gen)[:2]
    pool = ((labels == classes[0]) | (labels == classes[1])).nonzero().flatten()
    return pool[torch.randperm(len(pool), generator=gen)[:b]]


def run(args) -> dict:
    data, _ = common.load(args.dataset, args.data_dir)
    train, test = data.train, data.test
    sizes = [1, 8, 32] if args.quick else [int(v) for v in args.sizes.split(",")]
    steps = {"early": 20, "late": 100 if args.quick else 300}
    repeats = 3 if args.quick else args.repeats
    models = common.train_checkpoints(args.model, train, sorted(steps.values()), seed=args.seed, width=args.width)
    gen = torch.Generator().manual_seed(args.seed)
    aux_idx = torch.randperm(len(train), generator=gen)[:2000]
    x_aux, y_aux = train.x[aux_idx], train.y[aux_idx]
    results = []
    for ckpt, n_steps in steps.items():
        model = models[n_steps]
        for regime in ("iid", "two_classes"):
            for b in sizes:
                estimates, methods = [], []
                for _ in range(repeats):
                    idx = batch_indices(test.y, b, regime, train.num_classes, gen)
                    upload = replace(simulate_upload(model, test.x[idx], test.y[idx]), batch_size=None)
                    est = estimate_batch_size(model, upload, x_aux, y_aux)
                    estimates.append(est.estimate)
                    methods.append(est.method)
                ratios = [e / b for e in estimates]
                results.append({"checkpoint": ckpt, "regime": regime, "batch_size": b, "estimates": estimates,
                                "methods": methods, "ratio_min": min(ratios), "ratio_median": statistics.median(ratios),
                                "ratio_max": max(ratios)})
                r = results[-1]
                print(f"{ckpt:5s} {regime:11s} B={b:3d} estimates={estimates} ratio min {r['ratio_min']:.2f} "
                      f"median {r['ratio_median']:.2f} max {r['ratio_max']:.2f}", flush=True)
    return {"benchmark": "batch_size_estimation", "dataset": args.dataset, "model": args.model, "width": args.width,
            "quick": args.quick, "repeats": repeats, "environment": common.environment(), "results": results}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist", choices=sorted(common.TASKS))
    p.add_argument("--model", default="small_cnn", choices=["small_cnn", "resnet"])
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--sizes", default="1,2,4,8,9,16,32,64,128,256,512", help="batch sizes (full run)")
    p.add_argument("--repeats", type=int, default=8, help="batches per (checkpoint, regime, B)")
    args = common.parse(p)
    payload = run(args)
    common.write_outputs(args.json, payload, "batch_size_estimation")
    print(f"wrote {args.json or 'benchmarks/results/batch_size_estimation.json'}")


if __name__ == "__main__":
    main()
