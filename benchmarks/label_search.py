"""Benchmark: correcting the recovered label multiset by the head residual (gradient audit, 1 < B <= K).

Where the head's gradient determines E(X) (``1 < B <= K``), one wrong label from label-count
recovery makes the head's equations inconsistent and the head solve misses E(X). The search
(:func:`cotrain.audit.head_solve.refine_labels`) moves one label at a time while the head residual
at least halves. Same setting as ``feature_reconstruction.py`` (a CNN trained on the task, an early
and a late checkpoint, 2,000 auxiliary training samples), but many batches per B and only the head
solve (``steps=0``: no X optimisation), with the search on and off. Per (model, checkpoint, B):
``wrong_labels`` (mean over batches of labels outside the true multiset), ``labels_exact`` (share of
batches whose multiset is exact), E(X) ``success_rate`` / ``success_rate_centred`` (matched cosine
> 0.95, Hungarian) and the mean seconds per upload, for ``label_search`` true and false.

    python benchmarks/label_search.py --quick --json bench_out/label_search.json
"""

from __future__ import annotations

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
from cotrain.audit.scoring import score_reconstruction  # noqa: E402
from cotrain.audit.threat_model import simulate_upload  # noqa: E402


def wrong_labels(found: torch.Tensor, truth: torch.Tensor, num_classes: int) -> int:
    """Labels of ``found`` outside the true multiset: ``B - sum_k min(n_hat_k, n_k)``."""
    n_hat = torch.bincount(found, minlength=num_classes)
    n = torch.bincount(truth, minlength=num_classes)
    return int(truth.numel() - torch.minimum(n_hat, n).sum())


def run(args) -> dict:
    data, _ = common.load(args.dataset, args.data_dir)
    train, test = data.train, data.test
    k = train.num_classes
    sizes = [8] if args.quick else [int(v) for v in args.sizes.split(",")]
    batches = 2 if args.quick else args.batches
    models = ["small_cnn"] if args.quick else args.models.split(",")
    steps = {"early": 20, "late": 100 if args.quick else 300}
    gen = torch.Generator().manual_seed(args.seed)
    aux_idx = torch.randperm(len(train), generator=gen)[:2000]
    x_aux, y_aux = train.x[aux_idx], train.y[aux_idx]
    if any(not 1 < b <= k for b in sizes):  # before any training: bad input loses nothing
        raise SystemExit(f"--sizes: the search runs only for 1 < B <= K = {k}; got {sizes}")
    results, info = [], {}
    for model_name in models:
        trained = common.train_checkpoints(model_name, train, sorted(steps.values()), seed=args.seed, width=args.width)
        for ckpt, n_steps in steps.items():
            model = trained[n_steps]
            info[f"{model_name}/{ckpt}"] = {"train_steps": n_steps, "test_accuracy": common.accuracy(model, test)}
            prior = auxiliary_prior(model, x_aux, y_aux)
            probs = class_probability_matrix(model, x_aux, y_aux, k)
            with torch.no_grad():  # experiment side: the centre for centred scores
                center = model.features(x_aux[:1000]).mean(0)
            for b in sizes:
                rows: dict[bool, list] = {False: [], True: []}
                for _ in range(batches):
                    idx = torch.randperm(len(test), generator=gen)[:b]
                    x, y = test.x[idx], test.y[idx]
                    upload = simulate_upload(model, x, y)
                    with torch.no_grad():
                        true_e = model.features(x)
                    for search in (False, True):
                        settings = ReconstructionSettings(steps=0, label_search=search, seed=args.seed)
                        t0 = time.perf_counter()
                        rec = reconstruct_features(model, upload, prior=prior, settings=settings, class_probs=probs)
                        seconds = time.perf_counter() - t0
                        score = score_reconstruction(rec.embeddings, true_e, center)
                        rows[search].append((wrong_labels(rec.labels, y, k), score["success_rate"],
                                             score["success_rate_centred"], seconds))
                for search, vals in rows.items():
                    row = {"model": model_name, "checkpoint": ckpt, "batch_size": b, "label_search": search,
                           "batches": batches,
                           "wrong_labels": statistics.fmean(v[0] for v in vals),
                           "labels_exact": statistics.fmean(float(v[0] == 0) for v in vals),
                           "success_rate": statistics.fmean(v[1] for v in vals),
                           "success_rate_centred": statistics.fmean(v[2] for v in vals),
                           "seconds": statistics.fmean(v[3] for v in vals)}
                    results.append(row)
                    print(f"{model_name:9s} {ckpt:5s} B={b} search={'on ' if search else 'off'} "
                          f"wrong labels {row['wrong_labels']:.2f} exact {row['labels_exact']:.2f} "
                          f"E success {row['success_rate']:.3f} / centred {row['success_rate_centred']:.3f} "
                          f"{row['seconds']:.2f}s", flush=True)
    return {"benchmark": "label_search", "dataset": args.dataset, "width": args.width, "quick": args.quick,
            "checkpoints": info, "environment": common.environment(), "results": results}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist", choices=sorted(common.TASKS))
    p.add_argument("--models", default="small_cnn,resnet", help="comma-separated (full run)")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--sizes", default="2,4,8", help="batch sizes, each 1 < B <= K (full run)")
    p.add_argument("--batches", type=int, default=16, help="uploads per (model, checkpoint, B) (full run)")
    args = common.parse(p)
    payload = run(args)
    out = common.write_outputs(args.json, payload, "label_search").with_suffix(".json")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
