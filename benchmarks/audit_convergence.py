"""Benchmark: does the feature reconstruction at B = 512 converge within 60 s, and what does stopping there cost?

The audit's standard B = 512 case is that of ``benchmarks/feature_reconstruction.py`` (its largest
batch): MNIST, ``small_cnn`` width 16, SGD checkpoints after 20 (early) and 300 (late) steps, 2,000
auxiliary training samples for the server, the B = 512 test batches drawn in the same order (the
batch draws of the sizes before it are repeated so the same samples come out), 3000 Adam steps,
the default settings (prior term on: ``equations_per_unknown`` is 0.015 at X). ``--sizes`` audits
other batch sizes of that benchmark as well (``goal_met`` then reads "stopped by the criterion or
the tolerance within the cap" for each).

Per upload, two runs with the same seed and a ``--cap`` (60 s) time limit:

* ``converged``: ``stop="relative_change"`` (``--rel-tol`` 1e-3 over ``--window`` 100 steps);
* ``cap``: ``stop="tolerance"`` (the default before ``"auto"``), which at B = 512 only the cap stops.

Both follow the same optimisation path (checked on the thinned traces: ``same_path``), so the
second is the first run on to the cap. For each: the per-restart reports (stop reason, steps, wall
and CPU seconds, objective, trace), the whole call's wall seconds, and the benchmark's quality
metric (Hungarian-matched cosine: success rate > 0.95 and mean, raw and centred, at X and E(X)),
beside the auxiliary start (no step). ``step_cost``: CPU ms at B = 512 (interleaved repetitions,
medians) of one objective-and-gradient evaluation, the fast path (constants once) against the
formula recomputing them; of the first-order part alone (E and g_hat, no second backward); and
of one Adam update, torch's default against ``fused=True`` (not used: it changes the last bits).
The machine is shared: load averages at start and end, torch threads, CPU beside wall seconds.

    nice -n 10 python benchmarks/audit_convergence.py --threads 1 --data-dir ../shared/data --json benchmarks/results/audit_convergence.json
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _audit_common as common  # noqa: E402

from cotrain.audit.feature_reconstruction import (ReconstructionSettings, auxiliary_prior,  # noqa: E402
                                                  reconstruct_features)
from cotrain.audit.labels import class_probability_matrix  # noqa: E402
from cotrain.audit.objective import PriorTerm, ReconstructionProblem  # noqa: E402
from cotrain.audit.scoring import score_reconstruction  # noqa: E402
from cotrain.audit.threat_model import block_parameter_names, head_parameter_names, simulate_upload  # noqa: E402


def quality(rec, true: dict, center: dict) -> dict:
    return {level: score_reconstruction(rebuilt, true[level], center[level])
            for level, rebuilt in (("block_input", rec.features), ("embedding", rec.embeddings))}


def run_summary(rec, true: dict, center: dict) -> dict:
    return {"stop_reason": rec.stop_reason, "steps": rec.steps, "call_wall_seconds": rec.seconds,
            "objective": rec.objective, "restarts": [r.to_dict() for r in rec.restarts],
            "quality": quality(rec, true, center)}


def step_cost(model, upload, prior, prior_weight: float, reps: int) -> dict:
    """CPU ms per objective-and-gradient evaluation: fast path vs the formula recomputing constants (interleaved)."""
    net = upload.shared_model(model)
    for p in net.parameters():
        p.requires_grad_(True)
    last, head = net.last_block_and_head()
    params = dict(net.named_parameters())
    bn, hn = block_parameter_names(net, -1), head_parameter_names(net)
    b = int(upload.batch_size)
    problem = ReconstructionProblem(
        last=last, head=head, block_params=[params[n] for n in bn], head_params=[params[n] for n in hn],
        g_block=[upload.gradients[n] for n in bn], g_head=[upload.gradients[n] for n in hn],
        labels=prior.labels[:b], shape=tuple(prior.block_inputs.shape[1:]), num_classes=head.out_features,
        anchor=None, nonnegative=True, soft=False, prior_weight=prior_weight)
    x0 = prior.block_inputs[:b].clone()
    x_hat = (x0 * 1.01).requires_grad_(True)
    start = PriorTerm(x0)
    adam = {k: torch.optim.Adam([torch.zeros_like(x0, requires_grad=True)], lr=1e-3, fused=k == "adam_fused")
            for k in ("adam_default", "adam_fused")}

    def first_order() -> None:  # E(X_hat) and g_hat only: what the step costs without the second backward
        e = last(x_hat).reshape(b, -1)
        ce = torch.nn.functional.cross_entropy(head(e), problem.labels)
        torch.autograd.grad(ce, problem.block_params + problem.head_params)

    def adam_step(opt) -> None:
        opt.param_groups[0]["params"][0].grad = x0
        opt.step()

    evals = {"fast": lambda: torch.autograd.grad(problem.objective(x_hat, None, start), [x_hat]),
             "recomputed": lambda: torch.autograd.grad(problem.reference_objective(x_hat, None, x0), [x_hat]),
             "first_order_only": first_order,
             **{k: (lambda o=o: adam_step(o)) for k, o in adam.items()}}
    values = {"fast": float(problem.objective(x_hat, None, start).detach()),
              "recomputed": float(problem.reference_objective(x_hat, None, x0).detach())}
    times: dict[str, list[float]] = {k: [] for k in evals}
    for _ in range(reps):
        for k, f in evals.items():
            c = time.process_time()
            f()
            times[k].append(1000 * (time.process_time() - c))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"cpu_ms_median": med, "cpu_ms_min": {k: min(v) for k, v in times.items()}, "reps": reps,
            "saving_fraction": 1 - med["fast"] / med["recomputed"],
            "second_backward_fraction": 1 - med["first_order_only"] / med["fast"], "objective": values}


def same_path(a: list, b: list) -> bool:
    """The shorter trace is a prefix of the longer one (same steps, same objectives)."""
    n = min(len(a), len(b)) - 1  # the last entry of each is its stop step, off the thinning grid
    return n >= 0 and a[:n] == b[:n]


def audit_one(args, ckpt: str, n_steps: int, model, test, x, y, prior, probs, center, cap: float) -> dict:
    """One upload: the auxiliary start, the run to the criterion, the run to the cap, and the step cost."""
    upload = simulate_upload(model, x, y)
    b = len(y)
    with torch.no_grad():
        true = {"block_input": model.features(x, model.num_blocks - 1), "embedding": model.features(x)}
    row = {"checkpoint": ckpt, "train_steps": n_steps, "test_accuracy": common.accuracy(model, test), "batch_size": b}
    start = reconstruct_features(model, upload, prior=prior, class_probs=probs,
                                 settings=ReconstructionSettings(steps=0, seed=args.seed))
    row["auxiliary_start"] = {"quality": quality(start, true, center)}
    base = dict(steps=args.steps, time_limit=cap, seed=args.seed, restarts=args.restarts, rel_tol=args.rel_tol,
                window=args.window)
    for name, stop in (("converged", "relative_change"), ("cap", "tolerance")):
        rec = reconstruct_features(model, upload, prior=prior, settings=ReconstructionSettings(stop=stop, **base),
                                   class_probs=probs)
        row[name] = run_summary(rec, true, center)
        row["prior_weight"], row["equations_per_unknown"] = rec.prior_weight, rec.equations_per_unknown
        r0 = row[name]["restarts"][rec.best_restart]
        print(f"{ckpt:5s} B={b:3d} {name:9s} stop={rec.stop_reason:9s} steps={rec.steps:5d} "
              f"wall={r0['wall_seconds']:.1f}s cpu={r0['cpu_seconds']:.1f}s call={rec.seconds:.1f}s "
              f"J={rec.objective:.6f} E cos={row[name]['quality']['embedding']['mean_cosine']:.4f} "
              f"centred={row[name]['quality']['embedding']['mean_cosine_centred']:.4f} "
              f"load={os.getloadavg()[0]:.1f}", flush=True)
    row["same_path"] = all(same_path(a["trace"], c["trace"])
                           for a, c in zip(row["converged"]["restarts"], row["cap"]["restarts"]))
    conv, capped = row["converged"], row["cap"]
    row["goal_met"] = conv["stop_reason"] in ("converged", "tolerance") and conv["call_wall_seconds"] <= cap
    row["objective_relative_gap_cap_vs_converged"] = (conv["objective"] - capped["objective"]) / \
        max(abs(capped["objective"]), 1e-12)
    if args.cost_reps > 0:
        row["step_cost"] = step_cost(model, upload, prior, row["prior_weight"], reps=5 if args.quick else args.cost_reps)
        print(f"{ckpt:5s} B={b:3d} step cost (CPU ms, median): {row['step_cost']['cpu_ms_median']} "
              f"saving {100 * row['step_cost']['saving_fraction']:.1f}%", flush=True)
    print(f"{ckpt:5s} B={b:3d} same_path={row['same_path']} goal_met={row['goal_met']}", flush=True)
    return row


def run(args) -> dict:
    quick = args.quick
    load_start = os.getloadavg()
    data, _ = common.load(args.dataset, args.data_dir)
    train, test = data.train, data.test
    sizes = [128] if quick else [int(v) for v in args.sizes.split(",")]
    draws = [1, 8, 128] if quick else [int(v) for v in args.draw_sizes.split(",")]
    if not set(sizes) <= set(draws):
        raise SystemExit(f"every size of --sizes must be one of --draw-sizes {draws}")
    cap = args.cap if args.cap else (8.0 if quick else 60.0)
    steps = {"early": 20, "late": 100 if quick else 300}
    models = common.train_checkpoints(args.model, train, sorted(steps.values()), seed=args.seed, width=args.width)
    gen = torch.Generator().manual_seed(args.seed)
    aux_idx = torch.randperm(len(train), generator=gen)[:2000]
    x_aux, y_aux = train.x[aux_idx], train.y[aux_idx]
    uploads = []
    for ckpt, n_steps in steps.items():
        model = models[n_steps]
        prior = auxiliary_prior(model, x_aux, y_aux)
        probs = class_probability_matrix(model, x_aux, y_aux, train.num_classes)
        with torch.no_grad():
            center = {"block_input": prior.block_inputs.mean(0), "embedding": model.features(x_aux[:1000]).mean(0)}
        for b in draws:  # the draw order of feature_reconstruction.py, so its batches come out
            idx = torch.randperm(len(test), generator=gen)[:b]
            if b in sizes:
                uploads.append(audit_one(args, ckpt, n_steps, model, test, test.x[idx], test.y[idx], prior, probs,
                                         center, cap))
    return {"benchmark": "audit_convergence", "dataset": args.dataset, "model": args.model, "width": args.width,
            "quick": quick, "batch_sizes": sizes, "cap_s": cap, "steps": args.steps, "restarts": args.restarts,
            "criterion": {"stop": "relative_change", "rel_tol": args.rel_tol, "window": args.window},
            "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
            "torch_threads": torch.get_num_threads(), "environment": common.environment(),
            "goal_met": all(r["goal_met"] for r in uploads), "uploads": uploads}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist", choices=sorted(common.TASKS))
    p.add_argument("--model", default="small_cnn", choices=["small_cnn", "resnet"])
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--sizes", default="512", help="batch sizes to audit (full run; quick: 128)")
    p.add_argument("--draw-sizes", default="1,8,32,128,256,512",
                   help="batch draws in order (feature_reconstruction.py's sizes), so the same batches come out")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--restarts", type=int, default=1)
    p.add_argument("--cap", type=float, default=None, help="time limit per reconstruction (default 60 s, quick 8 s)")
    p.add_argument("--rel-tol", type=float, default=1e-3)
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--cost-reps", type=int, default=40, help="repetitions of the step-cost timing (0: skip it)")
    args = common.parse(p)
    payload = run(args)
    out = common.write_outputs(args.json, payload, "audit_convergence").with_suffix(".json")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
