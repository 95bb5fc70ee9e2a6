"""Benchmark: per-sample private-attribute inference from one FedSGD upload.

Data sets (task / private attribute): UTKFace (race / gender), dSprites (shape / scale_large),
synthetic (class / thickness). A small CNN is trained on the task; a participant uploads the
gradient of one private batch (test split); the server holds 2,000 auxiliary training samples
with the attribute. Methods (per-sample attribute accuracy, Hungarian-matched on E(X) where the
method rebuilds per-sample features):

* ``feature_reconstruction`` — reconstruct E(X) from the upload, classify each (default settings:
  the prior term is on where the counting bound is below 1);
* ``feature_reconstruction_no_prior`` — the same with ``prior_weight=0`` (the method before the prior term);
* ``auxiliary_prior`` — the same classifier on the reconstruction's starting point (aux samples
  of the recovered classes), i.e. what the labels alone give;
* ``batch_property`` — Melis et al. (2019): proportion regressed from the gradient, majority value
  guessed for every sample;
* ``input_reconstruction`` — Inverting Gradients, then the classifier on the rebuilt inputs' features;
* ``oracle`` — the classifier on the true features (upper bound); ``majority`` — the auxiliary
  data's most common value.

    python benchmarks/attribute_inference.py --quick --json benchmarks/results/attribute_inference.json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _audit_common as common  # noqa: E402

from cotrain.audit.attribute_inference import AttributeClassifier, extract_features  # noqa: E402
from cotrain.audit.baselines import BatchPropertyInference, reconstruct_inputs  # noqa: E402
from cotrain.audit.feature_reconstruction import (ReconstructionSettings, auxiliary_prior,  # noqa: E402
                                                  reconstruct_features)
from cotrain.audit.labels import class_probability_matrix  # noqa: E402
from cotrain.audit.scoring import attribute_accuracy, match, proportion_error  # noqa: E402
from cotrain.audit.threat_model import simulate_upload  # noqa: E402


def run_dataset(name: str, args) -> list[dict]:
    quick = args.quick
    data, attribute = common.load(name, args.data_dir)
    train, test = data.train, data.test
    steps = 60 if quick else 400
    model = common.train_checkpoints("small_cnn", train, [steps], seed=args.seed, width=16)[steps]
    acc = common.accuracy(model, test)
    gen = torch.Generator().manual_seed(args.seed)
    aux_idx = torch.randperm(len(train), generator=gen)[:2000]
    x_aux, y_aux, a_aux = train.x[aux_idx], train.y[aux_idx], train.attributes[attribute][aux_idx]
    num_values = int(a_aux.max()) + 1
    classifier = AttributeClassifier(seed=args.seed).fit(extract_features(model, x_aux), a_aux)
    prior = auxiliary_prior(model, x_aux, y_aux)
    probs = class_probability_matrix(model, x_aux, y_aux, train.num_classes)
    majority = int(np.bincount(a_aux.numpy()).argmax())
    limit = 4.0 if quick else 30.0
    rows = []
    for b in ([64] if quick else [64, 512]):
        idx = torch.randperm(len(test), generator=gen)[:b]
        x, y, a = test.x[idx], test.y[idx], test.attributes[attribute][idx]
        upload = simulate_upload(model, x, y)
        true_e = extract_features(model, x)
        found: dict[str, tuple[float, float, float]] = {}
        weights: dict[str, float] = {}  # prior_weight used by the reconstructions
        oracle = classifier.infer(true_e)
        found["oracle"] = (attribute_accuracy(oracle.predictions, a), proportion_error(oracle.proportion, a, num_values), 0.0)
        found["majority"] = (attribute_accuracy(np.full(b, majority), a),
                             proportion_error(np.eye(num_values)[majority], a, num_values), 0.0)
        for method, settings in (("feature_reconstruction", ReconstructionSettings(steps=3000, stop="tolerance", time_limit=limit)),
                                 ("feature_reconstruction_no_prior",
                                  ReconstructionSettings(steps=3000, stop="tolerance", time_limit=limit, prior_weight=0.0)),
                                 ("auxiliary_prior", ReconstructionSettings(steps=0, head_solve=False))):
            t0 = time.perf_counter()
            rec = reconstruct_features(model, upload, prior=prior, settings=settings, class_probs=probs)
            inf = classifier.infer(rec.embeddings)
            weights[method] = rec.prior_weight
            found[method] = (attribute_accuracy(inf.predictions, a, match(rec.embeddings, true_e)),
                             proportion_error(inf.proportion, a, num_values), time.perf_counter() - t0)
        t0 = time.perf_counter()
        bp = BatchPropertyInference(num_batches=16 if quick else 32, seed=args.seed).fit(model, x_aux, y_aux, a_aux, b)
        found["batch_property"] = (attribute_accuracy(bp.predict_samples(model, upload), a),
                                   proportion_error(bp.predict_proportion(model, upload), a, num_values),
                                   time.perf_counter() - t0)
        t0 = time.perf_counter()
        x_hat, _ = reconstruct_inputs(model, upload, tuple(x.shape[1:]), steps=5000, time_limit=limit / 2,
                                      class_probs=probs, seed=args.seed)
        e_hat = extract_features(model, x_hat)
        inf = classifier.infer(e_hat)
        found["input_reconstruction"] = (attribute_accuracy(inf.predictions, a, match(e_hat, true_e)),
                                         proportion_error(inf.proportion, a, num_values), time.perf_counter() - t0)
        for method, (acc_a, perr, sec) in found.items():
            rows.append({"dataset": name, "method": method, "batch_size": b, "attribute_accuracy": acc_a,
                         "proportion_error": perr, "seconds": sec, "attribute": attribute, "task_accuracy": acc,
                         **({"prior_weight": weights[method]} if method in weights else {})})
            print(f"{name:9s} B={b:3d} {method:24s} attribute_acc={acc_a:.3f} proportion_err={perr:.3f} {sec:.1f}s",
                  flush=True)
    return rows


def plot(payload: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = payload["results"]
    keys = sorted({(r["dataset"], r["batch_size"]) for r in rows})
    methods = ["feature_reconstruction", "feature_reconstruction_no_prior", "auxiliary_prior", "batch_property",
               "input_reconstruction", "oracle", "majority"]
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(keys)), 4))
    w = 0.8 / len(methods)
    for j, m in enumerate(methods):
        vals = [next((r["attribute_accuracy"] for r in rows if (r["dataset"], r["batch_size"]) == k and r["method"] == m),
                     np.nan) for k in keys]
        ax.bar(np.arange(len(keys)) + j * w, vals, w, label=m)
    ax.set_xticks(np.arange(len(keys)) + 0.4 - w / 2, [f"{d}\nB={b}" for d, b in keys])
    ax.set_ylabel("per-sample attribute accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--datasets", default=None, help="comma-separated (default: utkface,dsprites,synthetic; quick: synthetic)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.datasets.split(",") if args.datasets else (["synthetic"] if args.quick else ["utkface", "dsprites", "synthetic"])
    results = []
    for name in names:
        try:
            results += run_dataset(name, args)
            common.write_outputs(args.json, {"benchmark": "attribute_inference", "partial": True, "results": results},
                                 "attribute_inference")
        except FileNotFoundError as err:
            print(f"skipped {name}: {err}", flush=True)
    payload = {"benchmark": "attribute_inference", "quick": args.quick, "environment": common.environment(),
               "results": results}
    png = common.write_outputs(args.json, payload, "attribute_inference")
    plot(payload, png)
    print(f"wrote {png.with_suffix('.json')} and {png}")


if __name__ == "__main__":
    main()
