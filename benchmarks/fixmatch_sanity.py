"""Benchmark: does ``cotrain.sampling.fixmatch.train_fixmatch`` beat ``train_supervised`` on MNIST
with 250 labels (25 per digit) in a short CPU run?

Both train the same ``small_cnn`` (``--width``) from the same seeded initialisation on the same 250
labelled images, with the same SGD (Nesterov 0.9, weight decay 5e-4, lr 0.03, cosine decay) and
the same weak view (translate +-2 px, rotate +-10 degrees); FixMatch adds ``--unlabelled`` other
MNIST train images (strong view: RandAugment variant + Cutout, threshold 0.95, lambda_u 1).
Images are brought to the ECOS pool's format (3x32x32 in [0, 1]). Accuracy on MNIST's test split
(``--n-test`` caps it).

    python benchmarks/fixmatch_sanity.py --data-dir ../shared/data --threads 1 \
        --json benchmarks/results/fixmatch_sanity.json [--quick]

Writes ``{"results": [{"method", "seed", "steps", "test_accuracy", "seconds", ...}], ...}``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, parser, setup_threads, write_json  # noqa: E402

from cotrain.data import load_dataset, resize, to_rgb  # noqa: E402
from cotrain.data.base import ArrayDataset  # noqa: E402
from cotrain.models import build_model  # noqa: E402
from cotrain.sampling.fixmatch import accuracy, train_fixmatch, train_supervised  # noqa: E402
from cotrain.seeding import derive_seed, numpy_rng  # noqa: E402


def _fmt(x: torch.Tensor) -> torch.Tensor:
    return resize(to_rgb(x), 32).clamp(0, 1)


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--labels-per-class", type=int, default=25)
    p.add_argument("--unlabelled", type=int, default=20000)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--mu", type=int, default=7)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    args = p.parse_args()
    if args.quick:
        args.steps, args.unlabelled, args.n_test = 150, 5000, 1000
    setup_threads(args)
    mnist = load_dataset("mnist", data_dir=args.data_dir)
    n_test = len(mnist.test) if args.n_test is None else min(args.n_test, len(mnist.test))
    test = ArrayDataset(x=_fmt(mnist.test.x[:n_test]), y=mnist.test.y[:n_test], num_classes=10)
    rows = []
    for seed in args.seeds:
        rng = numpy_rng(seed, "fixmatch_sanity", "labels")
        y = mnist.train.y.numpy()
        lab = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: args.labels_per_class] for c in range(10)])
        rest = np.setdiff1d(np.arange(len(y)), lab)
        unl = np.sort(rng.permutation(rest)[: args.unlabelled])
        labelled = ArrayDataset(x=_fmt(mnist.train.x[lab]), y=mnist.train.y[lab], num_classes=10)
        ux, uy = _fmt(mnist.train.x[unl]), mnist.train.y[unl]
        init = derive_seed(seed, "fixmatch_sanity", "init")
        for method in ("supervised", "fixmatch"):
            model = build_model("small_cnn", input_shape=(3, 32, 32), num_classes=10, seed=init, width=args.width)
            if method == "supervised":
                stats = train_supervised(model, labelled, steps=args.steps, batch_size=args.batch_size, seed=seed)
            else:
                stats = train_fixmatch(model, labelled, ux, steps=args.steps, batch_size=args.batch_size,
                                       mu=args.mu, seed=seed, unlabelled_y=uy)
            acc = accuracy(model, test)
            history = stats.pop("history")
            rows.append({"method": method, "seed": seed, "labelled": len(labelled), "unlabelled": len(ux),
                         "test_accuracy": acc, **stats, "history": history})
            print(f"seed {seed} {method}: test accuracy {acc:.4f} in {stats['seconds']:.0f}s", flush=True)
    write_json(args.json, {"benchmark": "fixmatch_sanity", "args": vars(args), "environment": environment(),
                           "model": f"small_cnn width {args.width}", "n_test": n_test, "results": rows})


if __name__ == "__main__":
    main()
