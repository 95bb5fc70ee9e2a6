"""Private kNN (ECOS downstream (c)) settings sweep: answered queries, label accuracy and epsilon
of the client's private-kNN answers, per feature space (phi / teacher) and selection, no student.

Zhu et al.'s MNIST settings (gamma 0.05, k 300, T 180, sigma1 75, sigma2 25) assume 60,000 client
samples: about 3,000 kept per query, k a tenth of them. The client here holds at most
``--client-cap`` (5,000), so the sweep scales the settings by the kept count m = gamma * N:
k = f * m (f the neighbourhood fraction), T = t * k, sigma1 = s1 * k, sigma2 = s2 * k, and
reports epsilon from the RDP accountant (screening for every query, the argmax for answered ones).

    python benchmarks/private_knn_settings.py --domains mnist_m --encoder-cache /tmp/phicache_knn \
        --json benchmarks/results/private_knn_settings.json
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, parser, setup_threads, write_json  # noqa: E402
from open_source_sampling import cached_encoder, cached_teacher, load_pool  # noqa: E402

from cotrain.privacy import epsilon_of  # noqa: E402
from cotrain.runtime.inprocess import InProcessGrid  # noqa: E402
from cotrain.sampling import EcosSettings, encode, prepare_cloud, run_ecos, select_kcenter, select_random  # noqa: E402
from cotrain.sampling.knn_features import KnnClient, penultimate_features  # noqa: E402
from cotrain.sampling.private_knn import private_knn_labels  # noqa: E402
from cotrain.seeding import numpy_rng, torch_generator  # noqa: E402

PUBLISHED = {"sampling_rate": 0.05, "k": 300, "sigma1": 75.0, "threshold": 180.0, "sigma2": 25.0}
BENCHMARK_DEFAULT = {"sampling_rate": 0.6, "k": 300, "sigma1": 75.0, "threshold": 180.0, "sigma2": 25.0}


def scaled(gamma: float, f: float, t: float, s1: float, s2: float, n: int) -> dict:
    """Settings for kept count m = gamma * n: k = f * m, T = t * k, sigma1 = s1 * k, sigma2 = s2 * k."""
    k = max(1, round(f * gamma * n))
    return {"sampling_rate": gamma, "k": k, "sigma1": s1 * k, "threshold": t * k, "sigma2": s2 * k}


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--domains", nargs="+", default=["mnist_m"])
    p.add_argument("--methods", nargs="+", default=["ecos", "random", "kcenter"])
    p.add_argument("--spaces", nargs="+", default=["teacher", "phi"])
    p.add_argument("--budget", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epsilon", type=float, default=1.0, help="ECOS's score release")
    p.add_argument("--k", type=int, default=100, help="ECOS's K-means K")
    p.add_argument("--per-source", type=int, default=4000)
    p.add_argument("--client-cap", type=int, default=5000)
    p.add_argument("--test-cap", type=int, default=2000)
    p.add_argument("--steps", type=int, default=500, help="teacher training steps")
    p.add_argument("--encoder-steps", type=int, default=1000)
    p.add_argument("--encoder-cache", default=None)
    p.add_argument("--gammas", nargs="+", type=float, default=[0.1, 0.3, 0.6])
    p.add_argument("--fs", nargs="+", type=float, default=[0.05, 0.1, 0.2], help="k / (gamma * N)")
    p.add_argument("--ts", nargs="+", type=float, default=[0.6, 0.9], help="T / k (published 0.6)")
    p.add_argument("--noise-scales", nargs="+", type=float, default=[1.0, 2.0, 4.0],
                   help="c: sigma1 = 0.25 c k, sigma2 = c k / 12 (c = 1: the published ratios)")
    p.add_argument("--phi-grid", choices=["published_ratios", "full"], default="published_ratios",
                   help="phi space: the grid at t = 0.6, c = 1 only (the comparison), or all of it")
    args = p.parse_args()
    if args.quick:
        args.domains, args.per_source, args.client_cap, args.test_cap = ["usps"], 300, 500, 300
        args.steps, args.encoder_steps, args.k, args.budget = 60, 40, 20, 200
        args.gammas, args.fs, args.noise_scales, args.methods = [0.3], [0.1], [1.0], ["random", "ecos"]
    setup_threads(args)
    rows = []
    for domain in args.domains:
        t0 = time.time()
        pool = load_pool(args.data_dir, domain, seed=args.seed, per_source=args.per_source,
                         client_cap=args.client_cap, test_cap=args.test_cap)
        in_domain = pool.source == domain
        base = EcosSettings(k=args.k, epsilon=args.epsilon, encoder_steps=args.encoder_steps, budget=args.budget)
        phi = cached_encoder(pool, base, seed=args.seed, cache=args.encoder_cache, tag=domain)
        cloud = prepare_cloud(pool.x, base, seed=args.seed, encoder=phi)
        client = KnnClient("client", pool.client_train, seed=args.seed, test=pool.client_test)
        grid = InProcessGrid({"client": client})
        picks, score_spends = {}, {}
        for method in args.methods:
            if method == "ecos":
                res = run_ecos(grid, cloud, dataclasses.replace(base), client="client")
                picks[method], score_spends[method] = res.indices, list(res.spends)
            elif method == "random":
                picks[method] = select_random(len(pool.y), args.budget, numpy_rng(args.seed, "random", args.budget))
            elif method == "kcenter":
                picks[method] = select_kcenter(cloud.features, args.budget)
        teacher = cached_teacher(pool, steps=args.steps, seed=args.seed, cache=args.encoder_cache) \
            if "teacher" in args.spaces else None
        x_c, y_c, n = pool.client_train.x, pool.client_train.y, len(pool.client_train)
        client_feats = {"phi": lambda: torch.from_numpy(encode(phi, x_c)),
                        "teacher": lambda: penultimate_features(teacher, x_c)}
        query_feats = {"phi": lambda i: torch.from_numpy(cloud.features[i]),
                       "teacher": lambda i: penultimate_features(teacher, pool.x[i])}
        settings = [("published", PUBLISHED), ("benchmark_default", BENCHMARK_DEFAULT)] + [
            (f"gamma={g},f={f},t={t},c={c}", scaled(g, f, t, 0.25 * c, c / 12, n))
            for g, f, t, c in itertools.product(args.gammas, args.fs, args.ts, args.noise_scales)]
        print(f"{domain}: prepared in {time.time() - t0:.0f}s, client N = {n}", flush=True)
        for space in args.spaces:
            cf = client_feats[space]()
            for method, idx in picks.items():
                qf, truth = query_feats[space](idx), pool.y[idx]
                for name, opts in settings:
                    if space == "phi" and args.phi_grid != "full" and name.startswith("gamma") and \
                            not name.endswith(",t=0.6,c=1.0"):
                        continue
                    t1 = time.time()
                    spends = []
                    out = private_knn_labels(qf, cf, y_c, num_classes=10, **opts, party="client", round=0,
                                             record=spends.append,
                                             generator=torch_generator(args.seed, "knn_sweep", domain, method, name))
                    a = out.answered
                    right = out.labels == truth
                    lab = a & (truth >= 0)
                    eps = epsilon_of(spends, delta=1e-5, accountant="rdp")
                    row = {"client_domain": domain, "method": method, "knn_features": space, "setting": name,
                           **opts, "budget": args.budget, "seed": args.seed, "client_size": n,
                           "answered": int(a.sum()),
                           "answered_label_accuracy": float(right[a].float().mean()) if a.any() else None,
                           "answered_labelled": int(lab.sum()),
                           "answered_labelled_accuracy": float(right[lab].float().mean()) if lab.any() else None,
                           "answered_in_domain": int(in_domain[idx[a.numpy()]].sum()),
                           "in_domain_fraction": float(in_domain[idx].mean()),
                           "noiseless_vote_accuracy": float((out.votes.argmax(1) == truth)[truth >= 0].float().mean()),
                           "epsilon_knn": float(eps), "delta": 1e-5,
                           "epsilon_total": float(epsilon_of(score_spends[method] + spends, delta=1e-5,
                                                             accountant="rdp")) if method in score_spends else None,
                           "seconds": time.time() - t1}
                    rows.append(row)
                    print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                           if k in ("method", "knn_features", "setting", "k", "answered", "answered_label_accuracy",
                                    "answered_labelled_accuracy", "epsilon_knn", "seconds")}, flush=True)
    write_json(args.json, {"benchmark": "private_knn_settings", "args": vars(args), "environment": environment(),
                           "notes": {"settings": "k = f * gamma * N, T = t * k, sigma1 = 0.25 c k, sigma2 = c k / 12",
                                     "privacy": "cotrain.privacy RDP accountant; the sweep's own use of the "
                                                "client's data to choose settings is not accounted"},
                           "rows": rows})


if __name__ == "__main__":
    main()
