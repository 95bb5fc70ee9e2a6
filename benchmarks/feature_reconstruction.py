"""Benchmark: per-sample deep-feature reconstruction from one FedSGD upload (patent CN114287009A).

A CNN is trained on the task (MNIST by default); at an early and a late checkpoint a participant
uploads the gradient of one private batch (test split) of size B. The server, with 2,000 auxiliary
training samples of its own, reconstructs the batch's features. Scored (Hungarian matching on
cosine) at two levels: ``block_input`` (X, the output of f_n) and ``embedding`` (E(X)).

Methods: ``feature_reconstruction`` (this library's improved method, default settings: the prior
term is on where the counting bound is below 1), ``feature_reconstruction_no_prior`` (the same
with ``prior_weight=0``: the method before the prior term), ``feature_reconstruction_no_label_search``
(``label_search=False``, only at ``1 < B <= K`` where the search runs), ``feature_reconstruction_patent``
(the document's settings), ``auxiliary_prior`` (the improved method's starting point, no gradient
step: what the server's own data already gives), ``input_reconstruction`` (Inverting Gradients on
the whole model, then the model's features of the rebuilt inputs). Each row carries the counting
bound ``equations_per_unknown`` at its level, the ``prior_weight`` used (reconstruction rows), and
``estimated_batch_size``: what the server would estimate for B from the same upload and its 2,000
auxiliary samples had the metadata lacked it (:func:`cotrain.audit.batch_size.estimate_batch_size`;
the reconstructions use the true B).

    python benchmarks/feature_reconstruction.py --quick --json benchmarks/results/feature_reconstruction.json
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _audit_common as common  # noqa: E402

from cotrain.audit.baselines import reconstruct_inputs  # noqa: E402
from cotrain.audit.batch_size import estimate_batch_size  # noqa: E402
from cotrain.audit.feature_reconstruction import (ReconstructionSettings, auxiliary_prior,  # noqa: E402
                                                  counting_bound, reconstruct_features)
from cotrain.audit.labels import class_probability_matrix  # noqa: E402
from cotrain.audit.scoring import score_reconstruction  # noqa: E402
from cotrain.audit.threat_model import simulate_upload  # noqa: E402


def run(args, partial=None) -> dict:
    quick = args.quick
    data, _ = common.load(args.dataset, args.data_dir)
    train, test = data.train, data.test
    sizes = [1, 8] if quick else [int(v) for v in args.sizes.split(",")]
    steps = {"early": 20, "late": 100 if quick else 300}
    limit = args.time_limit if args.time_limit else (3.0 if quick else 60.0)
    base_limit = limit / 2 if quick else 15.0
    models = common.train_checkpoints(args.model, train, sorted(steps.values()), seed=args.seed, width=args.width)
    gen = torch.Generator().manual_seed(args.seed)
    aux_idx = torch.randperm(len(train), generator=gen)[:2000]
    x_aux, y_aux = train.x[aux_idx], train.y[aux_idx]
    results, info = [], {}
    for ckpt, n_steps in steps.items():
        model = models[n_steps]
        info[ckpt] = {"train_steps": n_steps, "test_accuracy": common.accuracy(model, test)}
        prior = auxiliary_prior(model, x_aux, y_aux)
        probs = class_probability_matrix(model, x_aux, y_aux, train.num_classes)
        shape = tuple(prior.block_inputs.shape[1:])
        with torch.no_grad():  # experiment side: centres for the centred scores
            center = {"block_input": prior.block_inputs.mean(0), "embedding": model.features(x_aux[:1000]).mean(0)}
        for b in sizes:
            idx = torch.randperm(len(test), generator=gen)[:b]
            x, y = test.x[idx], test.y[idx]
            upload = simulate_upload(model, x, y)
            t0 = time.perf_counter()
            bs = estimate_batch_size(model, replace(upload, batch_size=None), x_aux, y_aux)
            estimated = {"estimated_batch_size": bs.estimate, "estimated_batch_size_method": bs.method}
            print(f"{ckpt:5s} B={b:3d} estimated batch size {bs.estimate} ({bs.method}, head rank {bs.head_rank}, "
                  f"raw {bs.raw:.1f}, {time.perf_counter() - t0:.1f}s)", flush=True)
            with torch.no_grad():
                true = {"block_input": model.features(x, model.num_blocks - 1), "embedding": model.features(x)}
            eq, unk = counting_bound(model, b, shape)
            d = true["embedding"].shape[1]
            ratio = {"block_input": eq / unk, "embedding": eq / (b * d)}
            methods = {
                "feature_reconstruction": ReconstructionSettings(steps=3000, stop="tolerance", time_limit=limit, seed=args.seed),
                "feature_reconstruction_no_prior": ReconstructionSettings(steps=3000, stop="tolerance", time_limit=limit, seed=args.seed,
                                                                          prior_weight=0.0),
                "feature_reconstruction_no_label_search": ReconstructionSettings(steps=3000, stop="tolerance", time_limit=limit,
                                                                                 seed=args.seed, label_search=False),
                "auxiliary_prior": ReconstructionSettings(steps=0, head_solve=False, exact_batch_one=False, seed=args.seed),
                "feature_reconstruction_patent": ReconstructionSettings.patent(steps=5000, stop="tolerance", time_limit=base_limit,
                                                                               seed=args.seed),
            }
            if not 1 < b <= train.num_classes:  # the label search only runs where the head solve does
                del methods["feature_reconstruction_no_label_search"]
            for name, settings in methods.items():
                t0 = time.perf_counter()
                rec = reconstruct_features(model, upload, prior=prior, settings=settings, class_probs=probs)
                seconds = time.perf_counter() - t0
                labels_ok = float((rec.labels.sort().values == y.sort().values).float().mean())
                for level, rebuilt in (("block_input", rec.features), ("embedding", rec.embeddings)):
                    results.append({"method": name, "checkpoint": ckpt, "batch_size": b, "level": level,
                                    **score_reconstruction(rebuilt, true[level], center[level]), "seconds": seconds,
                                    "equations_per_unknown": ratio[level] if name != "feature_reconstruction_patent"
                                    else eq / (unk + b * train.num_classes),
                                    "steps": rec.steps, "prior_weight": rec.prior_weight, "label_accuracy": labels_ok,
                                    **estimated})
            t0 = time.perf_counter()
            x_hat, _ = reconstruct_inputs(model, upload, tuple(x.shape[1:]), steps=5000, time_limit=base_limit,
                                          class_probs=probs, seed=args.seed)
            seconds = time.perf_counter() - t0
            with torch.no_grad():
                model.eval()
                rebuilt = {"block_input": model.features(x_hat, model.num_blocks - 1), "embedding": model.features(x_hat)}
            n_params = sum(p.numel() for p in model.parameters())
            for level in ("block_input", "embedding"):
                results.append({"method": "input_reconstruction", "checkpoint": ckpt, "batch_size": b, "level": level,
                                **score_reconstruction(rebuilt[level], true[level], center[level]), "seconds": seconds,
                                "equations_per_unknown": n_params / x_hat.numel(), **estimated})
            for r in results[-2 * (len(methods) + 1):]:
                print(f"{r['checkpoint']:5s} B={r['batch_size']:3d} {r['method']:30s} {r['level']:11s} "
                      f"success={r['success_rate']:.3f} cos={r['mean_cosine']:.3f} "
                      f"centred: success={r['success_rate_centred']:.3f} cos={r['mean_cosine_centred']:.3f} eq/unk={r['equations_per_unknown']:.3g} "
                      f"{r['seconds']:.1f}s", flush=True)
            if partial is not None:
                partial({"benchmark": "feature_reconstruction", "partial": True, "results": results})
    return {"benchmark": "feature_reconstruction", "dataset": args.dataset, "model": args.model, "width": args.width,
            "quick": quick, "checkpoints": info, "time_limit_s": limit, "environment": common.environment(),
            "results": results}


def plot(payload: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, level in zip(axes, ("block_input", "embedding")):
        for method in sorted({r["method"] for r in payload["results"]}):
            for ckpt, style in (("early", "--"), ("late", "-")):
                rows = [r for r in payload["results"] if r["method"] == method and r["checkpoint"] == ckpt
                        and r["level"] == level]
                if rows:
                    ax.plot([r["batch_size"] for r in rows], [r["success_rate"] for r in rows], style, marker="o",
                            label=f"{method} ({ckpt})")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_title(f"level: {level}")
    axes[0].set_ylabel("success rate (matched cosine > 0.95)")
    axes[1].legend(fontsize=6)
    fig.suptitle(f"feature reconstruction, {payload['model']} on {payload['dataset']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist", choices=sorted(common.TASKS))
    p.add_argument("--model", default="small_cnn", choices=["small_cnn", "resnet"])
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--sizes", default="1,8,32,128,256,512", help="batch sizes (full run)")
    p.add_argument("--time-limit", type=float, default=None, help="seconds per reconstruction (default 60, quick 8)")
    args = common.parse(p)
    payload = run(args, partial=lambda p: common.write_outputs(args.json, p, "feature_reconstruction"))
    png = common.write_outputs(args.json, payload, "feature_reconstruction")
    plot(payload, png)
    print(f"wrote {png.with_suffix('.json')} and {png}")


if __name__ == "__main__":
    main()
