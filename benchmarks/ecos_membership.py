"""What ECOS's released coverage scores still leak: the membership game at the epsilons a client would use.

The client is 2,000 MNIST training images; the cloud's pool is 10,000 others, encoded by a denoising
encoder trained on the pool (as ECOS's cloud does) and clustered into K = 100 centroids. For each of
``targets`` client samples x, the game of :func:`cotrain.sampling.membership.membership_advantage`
is played on the client's real counts: D_1 = the client's data, D_0 = D_1 without x, the release
c_b + N(0, sigma^2 I) with sigma = sensitivity x the accountant's noise multiplier for (epsilon,
delta = 1e-5) (``noise_multiplier_for``, one release). Reported per score rule and epsilon: the
likelihood-ratio attacker's measured advantage (TPR - FPR), its exact value, and the bound any
attacker has under (epsilon, delta)-DP.

    python benchmarks/ecos_membership.py --data-dir ../shared/data --json benchmarks/results/ecos_membership.json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, parser, setup_threads, write_json  # noqa: E402
from cotrain.data import load_dataset
from cotrain.data.transforms import resize
from cotrain.privacy import noise_multiplier_for
from cotrain.sampling.compress import compress, nearest_centroids
from cotrain.sampling.coverage import build_rule
from cotrain.sampling.encoder import EncoderConfig, encode, train_denoising_encoder
from cotrain.sampling.membership import membership_advantage
from cotrain.seeding import numpy_rng

DELTA = 1e-5


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    setup_threads(args)
    t0 = time.perf_counter()
    quick = args.quick
    n_client, n_pool, k = (500, 2000, 50) if quick else (2000, 10000, 100)
    targets, trials = (5, 4000) if quick else (20, 20000)
    epsilons = [1.0, 4.0] if quick else [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]

    train = load_dataset("mnist", data_dir=args.data_dir).train
    order = numpy_rng(args.seed, "membership-bench", "split").permutation(len(train))
    x = resize(train.x, 32)
    client_x, pool_x = x[order[:n_client]], x[order[n_client:n_client + n_pool]]
    config = EncoderConfig(in_channels=1, image_size=32, width=16, dim=64)
    encoder = train_denoising_encoder(pool_x, config, seed=args.seed, steps=50 if quick else 400)
    pool_f, client_f = encode(encoder, pool_x), encode(encoder, client_x)
    centroids = compress(pool_f, k=k, seed=args.seed).centroids
    d2, _ = nearest_centroids(client_f, centroids, 3)
    radius = float(np.sqrt(np.median(d2[:, 2])))  # a typical sample reaches about 3 centroids
    rules = {"nearest": build_rule("nearest"), "knearest (k=3)": build_rule("knearest", k=3),
             f"radius (r={radius:.3g}, no cap)": build_rule("radius", radius=radius)}
    picks = numpy_rng(args.seed, "membership-bench", "targets").choice(n_client, size=targets, replace=False)

    rows, summary = [], []
    for rule_name, rule in rules.items():
        counts_with = rule.contributions(client_f, centroids).sum(axis=0)
        sensitivity = rule.sensitivity(k)
        for eps in epsilons:
            z = noise_multiplier_for(epsilon=eps, delta=DELTA, compositions=1)
            sigma = sensitivity * z
            group = []
            for j, t in enumerate(picks):
                mine = rule.contributions(client_f[t:t + 1], centroids).sum(axis=0)
                r = membership_advantage(torch.as_tensor(counts_with - mine), torch.as_tensor(counts_with),
                                         sigma=sigma, epsilon=eps, delta=DELTA, trials=trials,
                                         seed=args.seed * 1000 + j)
                row = {"rule": rule_name, "epsilon": eps, "delta": DELTA, "target": int(t),
                       "sensitivity": float(sensitivity), "noise_multiplier": z, "sigma": sigma,
                       "contribution_norm": float(np.linalg.norm(mine)), **{key: getattr(r, key) for key in (
                           "advantage", "tpr", "fpr", "analytic_advantage", "bound")}}
                rows.append(row)
                group.append(row)
            summary.append({"rule": rule_name, "epsilon": eps, "sensitivity": float(sensitivity),
                            "mean_advantage": float(np.mean([g["advantage"] for g in group])),
                            "max_advantage": float(np.max([g["advantage"] for g in group])),
                            "mean_analytic_advantage": float(np.mean([g["analytic_advantage"] for g in group])),
                            "bound": group[0]["bound"],
                            "mean_contribution_norm": float(np.mean([g["contribution_norm"] for g in group]))})
    write_json(args.json, {
        "benchmark": "ecos_membership", "quick": quick, "seed": args.seed,
        "setup": {"client_samples": n_client, "pool_samples": n_pool, "k": k, "targets": targets,
                  "trials_per_side": trials, "encoder": "denoising, trained on the pool", "delta": DELTA,
                  "accountant": "pld (noise_multiplier_for, one release)"},
        "summary": summary, "rows": rows, "seconds": round(time.perf_counter() - t0, 1), "environment": environment()})


if __name__ == "__main__":
    main()
