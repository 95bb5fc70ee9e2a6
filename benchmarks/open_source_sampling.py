"""ECOS (Hong et al., NeurIPS 2022) on digits: which pool samples the cloud picks for a client.

Each of MNIST, USPS and MNIST-M in turn is the client (half of its train split on the client, its
test split held by the client). The cloud's pool holds the other half, the other digit domains,
scikit-learn's 8x8 digits and out-of-distribution images (CIFAR-10, dSprites, UTKFace, Olivetti),
all 3x32x32. Methods pick ``budget`` pool samples; the downstream trains a model on the cloud and
the client reports only its test accuracy.

    python benchmarks/open_source_sampling.py --quick --json benchmarks/results/open_source_sampling_quick.json
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, parser, setup_threads, write_json  # noqa: E402

from cotrain.data.base import ArrayDataset  # noqa: E402
from cotrain.models import build_model  # noqa: E402
from cotrain.runtime.inprocess import InProcessGrid  # noqa: E402
from cotrain.sampling import (  # noqa: E402
    EcosClient, EcosSettings, build_encoder, evaluate_at_client, prepare_cloud, run_ecos,
    select_kcenter, select_random,
)
from cotrain.sampling.encoder import load_encoder, save_encoder  # noqa: E402
from cotrain.sampling.knn_features import KnnClient  # noqa: E402
from cotrain.seeding import numpy_rng, torch_generator  # noqa: E402

DOMAINS = ("mnist", "usps", "mnist_m")
METHODS = ("ecos", "ecos_no_noise", "random", "kcenter", "local", "full_pool")
MODEL, MODEL_OPTIONS = "small_cnn", {"width": 16}
TEACHER_WIDTH = 64  # downstream (b): the large teacher; the student is MODEL


@dataclass
class Pool:
    """The benchmark's view of the data: client train/test, pool images, pool labels (-1: none), source."""

    client_train: ArrayDataset
    client_test: ArrayDataset
    x: torch.Tensor
    y: torch.Tensor
    source: np.ndarray  # (N,) source-domain name of every pool sample
    note: str = ""


def load_pool(data_dir: str, domain: str, *, seed: int, per_source: int, client_cap: int, test_cap: int) -> Pool:
    from _ecos_pool import pool_for_benchmark

    return pool_for_benchmark(data_dir, domain, seed=seed, per_source=per_source, client_cap=client_cap,
                              test_cap=test_cap)


def cached_encoder(pool: Pool, settings: EcosSettings, *, seed: int, cache: str | None, tag: str):
    """phi for ``settings.encoder``, trained once per (tag, seed, steps) when ``cache`` is a folder."""
    if settings.encoder != "denoising" or not cache:
        return build_encoder(pool.x, settings, seed=seed)
    digest = hashlib.sha256(pool.x.numpy().tobytes()).hexdigest()[:16]  # phi is only reused on the same pool
    path = Path(cache) / f"phi_{tag}_seed{seed}_steps{settings.encoder_steps}_{digest}.pt"
    if path.is_file():
        return load_encoder(path)
    phi = build_encoder(pool.x, settings, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_encoder(phi, path)
    return phi


def cached_teacher(pool: Pool, *, steps: int, seed: int, cache: str | None) -> torch.nn.Module:
    """The cloud's large model (width ``TEACHER_WIDTH``) on every labelled pool image; kept in
    ``cache`` (a folder) per (pool, seed, steps) when given, like phi."""
    lab = np.flatnonzero(pool.y.numpy() >= 0)
    path = None
    if cache:
        digest = hashlib.sha256(pool.x.numpy().tobytes() + pool.y.numpy().tobytes()).hexdigest()[:16]
        path = Path(cache) / f"teacher_w{TEACHER_WIDTH}_seed{seed}_steps{steps}_{digest}.pt"
        if path.is_file():
            model = build_model(MODEL, input_shape=tuple(pool.x.shape[1:]), num_classes=10, seed=seed,
                                width=TEACHER_WIDTH)
            model.load_state_dict(torch.load(path))
            return model.eval()
    model = train_supervised(pool.x[lab], pool.y[lab], steps=steps, seed=seed, width=TEACHER_WIDTH)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return model


def translate(x: torch.Tensor, g: torch.Generator, pixels: int = 2) -> torch.Tensor:
    """Random shifts of up to ``pixels`` (zero padding), one per image: the weak digit view."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pixels,) * 4)
    dx, dy = (torch.randint(0, 2 * pixels + 1, (2, n), generator=g))
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def train_supervised(x: torch.Tensor, y: torch.Tensor, *, steps: int, seed: int, batch: int = 64,
                     width: int = MODEL_OPTIONS["width"]) -> torch.nn.Module:
    """Plain supervised training (Adam 1e-3, random shifts of up to 2 pixels)."""
    model = build_model(MODEL, input_shape=tuple(x.shape[1:]), num_classes=10, seed=seed, width=width)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch_generator(seed, "downstream")
    for _ in range(steps):
        idx = torch.randint(len(x), (min(batch, len(x)),), generator=g)
        loss = torch.nn.functional.cross_entropy(model(translate(x[idx], g)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def downstream_a(pool: Pool, labelled: np.ndarray, *, steps: int, seed: int, trainer: str,
                 mu: int) -> tuple[torch.nn.Module, str]:
    """Selective labelling: the labeller labels ``labelled`` (pool indices); OOD samples get no label.

    ``trainer``: ``"supervised"`` (the labelled selection only) or ``"fixmatch"`` (labelled selection
    + the unlabelled pool, threshold 0.95, lambda_u 1, ``cotrain.sampling.fixmatch``).
    """
    idx = labelled[pool.y[labelled].numpy() >= 0]
    x, y = pool.x[idx], pool.y[idx]
    if trainer == "supervised":
        return train_supervised(x, y, steps=steps, seed=seed), \
            "supervised training on the labelled selection (stand-in for FixMatch: see docs/sampling.md)"
    from cotrain.sampling.fixmatch import train_fixmatch

    model = build_model(MODEL, input_shape=tuple(x.shape[1:]), num_classes=10, seed=seed, **MODEL_OPTIONS)
    train_fixmatch(model, ArrayDataset(x=x, y=y, num_classes=10), pool.x, steps=steps, mu=mu, seed=seed)
    return model.eval(), f"FixMatch (mu {mu}): labelled selection + unlabelled pool"


def downstream_b(teacher: torch.nn.Module, pool: Pool, idx: np.ndarray, *, steps: int,
                 seed: int) -> tuple[torch.nn.Module, str]:
    """Model compression: distil the teacher into the small student on the (unlabelled) selection."""
    from cotrain.sampling.distill import distill

    student = build_model(MODEL, input_shape=tuple(pool.x.shape[1:]), num_classes=10, seed=seed, **MODEL_OPTIONS)
    distill(teacher.eval(), student, pool.x[idx], steps=steps, seed=seed)
    return student.eval(), f"distillation: small_cnn width {TEACHER_WIDTH} teacher (labelled pool) -> width 16 student"


def downstream_c(grid, cloud, pool: Pool, idx: np.ndarray, *, client: str, steps: int, seed: int, round: int,
                 score_spends, knn_options: dict, features: str = "phi",
                 teacher: torch.nn.Module | None = None, in_domain: np.ndarray | None = None) -> tuple[torch.nn.Module, str, dict]:
    """Private kNN: the client labels the selection in ``features`` space (``"phi"``, or ``"teacher"``:
    the (b) teacher's normalised penultimate features, the teacher sent down); a student trains on
    the answers."""
    from cotrain.privacy import epsilon_of
    from cotrain.sampling import label_with_private_knn, share_encoder
    from cotrain.sampling.knn_features import FEATURES_OPTION, penultimate_features, share_knn_network

    share_encoder(grid, cloud.encoder, client=client, round=round)
    first, first_entry = len(grid.ledger.privacy), len(grid.ledger.entries)
    extra: dict = {"knn_features": features}
    if features == "teacher":
        extra["bytes_knn_network"] = share_knn_network(grid, teacher, model_name=MODEL, client=client,
                                                       options={"width": TEACHER_WIDTH}, round=round + 1)
        queries = penultimate_features(teacher, pool.x[idx]).numpy()
    else:
        queries = cloud.features[idx]
    answered, labels, eps_knn = label_with_private_knn(grid, queries, client=client, round=round + 2,
                                                       options={**knn_options, FEATURES_OPTION: features})
    knn = [e for e in grid.ledger.entries[first_entry:] if e.kind == "ecos_knn_label"]
    truth = pool.y[idx[answered]]
    right = torch.as_tensor(labels) == truth
    extra.update({"answered": int(len(answered)), "epsilon_knn": eps_knn,
                  "answered_label_accuracy": float(right.float().mean()) if len(answered) else None,
                  "answered_labelled": int((truth >= 0).sum()),
                  "answered_labelled_accuracy": float(right[truth >= 0].float().mean()) if (truth >= 0).any() else None,
                  "answered_in_domain": None if in_domain is None else int(in_domain[idx[answered]].sum()),
                  "bytes_knn_queries": sum(e.bytes for e in knn if e.direction == "down"),
                  "bytes_knn_labels": sum(e.bytes for e in knn if e.direction == "up"),
                  "knn_options": dict(knn_options)})
    if score_spends:  # the client's total: scores and labels composed (RDP)
        extra["epsilon_total"] = float(epsilon_of(list(score_spends) + grid.ledger.privacy[first:], delta=1e-5,
                                                  accountant="rdp"))
    if not len(answered):
        raise RuntimeError("private kNN answered no query: lower the threshold")
    model = train_supervised(pool.x[idx[answered]], torch.as_tensor(labels), steps=steps, seed=seed)
    return model, f"private kNN labels in {features} space (answered only) -> supervised student", extra


def parse_knn(text: str) -> dict:
    """``"sampling_rate=0.6,k=300,..."`` -> the private-kNN keyword options."""
    return {k: (int(v) if k == "k" else float(v)) for k, v in (kv.split("=") for kv in text.split(","))}


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--domains", nargs="+", default=list(DOMAINS))
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--budgets", nargs="+", type=int, default=[1000])
    p.add_argument("--seeds", nargs="+", type=int, default=[1])
    p.add_argument("--epsilon", type=float, default=1.0)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--per-source", type=int, default=4000, help="pool samples kept per source domain")
    p.add_argument("--client-cap", type=int, default=5000, help="client train samples kept")
    p.add_argument("--test-cap", type=int, default=2000)
    p.add_argument("--steps", type=int, default=600, help="downstream training steps")
    p.add_argument("--encoder-steps", type=int, default=1000)
    p.add_argument("--encoders", nargs="+", default=["denoising", "random"])
    p.add_argument("--candidate-factor", type=float, default=2.0)
    p.add_argument("--downstreams", nargs="+", default=["selective_labelling"],
                   choices=["selective_labelling", "distillation", "private_knn"])
    p.add_argument("--knn", nargs="+", default=["sampling_rate=0.6,k=300,sigma1=75,threshold=180,sigma2=25"],
                   help="private kNN settings, one run each (default: Zhu et al.'s MNIST ones, rate scaled to "
                        "the client's size; benchmarks/private_knn_settings.py sweeps them)")
    p.add_argument("--knn-features", nargs="+", choices=["phi", "teacher"], default=["phi"],
                   help="private kNN's spaces: phi, and/or the (b) teacher's penultimate features (sent down)")
    p.add_argument("--trainer", choices=["supervised", "fixmatch"], default="supervised",
                   help="downstream (a): supervised on the labelled selection, or FixMatch with the pool "
                        "(full_pool too, with every labelled pool sample labelled; local stays supervised: no pool)")
    p.add_argument("--mu", type=int, default=2, help="FixMatch: unlabelled batch = mu x batch")
    p.add_argument("--encoder-cache", default=None, help="folder to keep trained encoders in between runs")
    p.add_argument("--selection-sweep", action="store_true",
                   help="no training: in-domain fraction of the selection over --ks x --candidate-factors")
    p.add_argument("--ks", nargs="+", type=int, default=[50, 100, 200, 400])
    p.add_argument("--candidate-factors", nargs="+", type=float, default=[1.0, 2.0, 4.0, math.inf])
    args = p.parse_args()
    if args.quick:
        args.domains, args.per_source, args.client_cap, args.test_cap = ["usps"], 300, 500, 300
        args.steps, args.encoder_steps, args.k, args.budgets, args.ks = 60, 40, 20, [200], [10, 20]
    setup_threads(args)
    knn_variants = [(space, parse_knn(text)) for space in args.knn_features for text in args.knn]
    rows, notes = [], {"privacy": "cotrain.privacy (PLD accountant for the scores, RDP for private kNN)"}
    if args.selection_sweep:
        return selection_sweep(args, notes)
    for seed in args.seeds:
        for domain in args.domains:
            t0 = time.time()
            pool = load_pool(args.data_dir, domain, seed=seed, per_source=args.per_source,
                             client_cap=args.client_cap, test_cap=args.test_cap)
            notes["pool"] = pool.note
            in_domain = pool.source == domain
            base = EcosSettings(k=args.k, epsilon=args.epsilon, encoder_steps=args.encoder_steps,
                                candidate_factor=args.candidate_factor)
            clouds = {enc: prepare_cloud(pool.x, dataclasses.replace(base, encoder=enc), seed=seed,
                                         encoder=cached_encoder(pool, dataclasses.replace(base, encoder=enc),
                                                                seed=seed, cache=args.encoder_cache, tag=domain))
                      for enc in args.encoders}
            prep_seconds = time.time() - t0
            client = KnnClient("client", pool.client_train, seed=seed, test=pool.client_test)
            grid = InProcessGrid({"client": client})
            rnd = 0
            for budget in args.budgets:
                picks: list[tuple[str, str, np.ndarray | None, dict]] = []
                for method in args.methods:
                    t1 = time.time()
                    if method in ("ecos", "ecos_no_noise"):
                        for enc, cloud in clouds.items():
                            eps = args.epsilon if method == "ecos" else math.inf
                            res = run_ecos(grid, cloud, dataclasses.replace(base, budget=budget, epsilon=eps,
                                           encoder=enc), client="client", round_start=rnd)
                            rnd += 3
                            exact = client.exact_scores
                            picks.append((method, enc, res.indices, {
                                "epsilon": res.epsilon, "bytes_down": res.bytes_centroids,
                                "bytes_up": res.bytes_scores, "bytes_encoder": res.bytes_encoder,
                                "bytes_values": res.bytes_values,
                                "score_l1_error": float(np.abs(res.noisy_scores - exact).sum()),
                                "clusters_allocated": int((res.allocation.counts > 0).sum()),
                                "select_seconds": time.time() - t1, "spends": res.spends}))
                    elif method == "random":
                        picks.append((method, "", select_random(len(pool.y), budget,
                                                                numpy_rng(seed, "random", budget)), {}))
                    elif method == "kcenter":
                        picks.append((method, "denoising", select_kcenter(clouds[args.encoders[0]].features, budget),
                                      {"select_seconds": time.time() - t1}))
                    else:
                        picks.append((method, "", None, {}))
                teacher = None
                for downstream in args.downstreams:
                    if teacher is None and (downstream == "distillation" or (
                            downstream == "private_knn" and "teacher" in args.knn_features)):
                        teacher = cached_teacher(pool, steps=args.steps, seed=seed, cache=args.encoder_cache)
                    variants = knn_variants if downstream == "private_knn" else [("", {})]
                    for (method, enc, idx, info), (space, knn_options) in itertools.product(picks, variants):
                        if idx is None and downstream != "selective_labelling":
                            continue  # local and full_pool are baselines of (a)
                        t1 = time.time()
                        extra: dict = {}
                        if method == "local":
                            model, note = train_supervised(pool.client_train.x, pool.client_train.y,
                                                           steps=args.steps, seed=seed), \
                                "supervised on the client's own labelled data"
                        elif method == "full_pool" and args.trainer == "fixmatch":  # (a)'s upper bound
                            model, note = downstream_a(pool, np.flatnonzero(pool.y.numpy() >= 0), steps=args.steps,
                                                       seed=seed, trainer="fixmatch", mu=args.mu)
                            note += " (every labelled pool sample labelled)"
                        elif method == "full_pool":
                            lab = np.flatnonzero(pool.y.numpy() >= 0)
                            model, note = train_supervised(pool.x[lab], pool.y[lab], steps=args.steps, seed=seed), \
                                "supervised on every labelled pool sample"
                        elif downstream == "selective_labelling":
                            model, note = downstream_a(pool, idx, steps=args.steps, seed=seed, trainer=args.trainer,
                                                       mu=args.mu)
                        elif downstream == "distillation":
                            model, note = downstream_b(teacher, pool, idx, steps=args.steps, seed=seed)
                        else:
                            model, note, extra = downstream_c(grid, clouds[args.encoders[0]], pool, idx, client="client",
                                                              steps=args.steps, seed=seed, round=rnd,
                                                              score_spends=info.get("spends", ()),
                                                              knn_options=knn_options, features=space,
                                                              teacher=teacher,
                                                              in_domain=in_domain)
                            rnd += 3
                        acc = evaluate_at_client(grid, model, client="client", model_name=MODEL,
                                                 options=MODEL_OPTIONS, round=rnd)
                        rnd += 1
                        row = {"client_domain": domain, "method": method, "downstream": downstream,
                               "budget": budget if idx is not None else None, "seed": seed, "test_accuracy": acc,
                               "epsilon": extra.get("epsilon_total", extra.get("epsilon_knn", info.get("epsilon", 0.0))),
                               "delta": 1e-5,
                               "bytes_down": info.get("bytes_down", 0), "bytes_up": info.get("bytes_up", 0),
                               "in_domain_fraction": None if idx is None else float(in_domain[idx].mean()),
                               "seconds": time.time() - t1 + info.get("select_seconds", 0.0),
                               "encoder": enc, "downstream_note": note,
                               "labelled": None if idx is None else int((pool.y[idx] >= 0).sum()),
                               **{k: v for k, v in info.items() if k not in ("epsilon", "bytes_down", "bytes_up",
                                                                            "spends")},
                               **extra}
                        rows.append(row)
                        print({k: row.get(k) for k in ("client_domain", "method", "downstream", "encoder", "budget",
                                                       "test_accuracy", "epsilon", "in_domain_fraction", "knn_features",
                                                       "answered", "answered_label_accuracy")}, flush=True)
            print(f"{domain} seed {seed}: prepare {prep_seconds:.0f}s, pool {len(pool.y)}", flush=True)
    write_json(args.json, {"benchmark": "open_source_sampling", "args": vars(args), "environment": environment(),
                           "notes": notes, "rows": rows})


def selection_sweep(args, notes: dict) -> None:
    """In-domain fraction of each method's selection (no downstream training), over K and r."""
    from cotrain.sampling.compress import compress
    from cotrain.sampling.encoder import encode
    from cotrain.sampling.protocol import CloudIndex

    rows = []
    for seed in args.seeds:
        for domain in args.domains:
            pool = load_pool(args.data_dir, domain, seed=seed, per_source=args.per_source,
                             client_cap=args.client_cap, test_cap=args.test_cap)
            notes["pool"] = pool.note
            in_domain = pool.source == domain
            for enc in args.encoders:
                s0 = EcosSettings(encoder=enc, encoder_steps=args.encoder_steps, epsilon=args.epsilon)
                phi = cached_encoder(pool, s0, seed=seed, cache=args.encoder_cache, tag=domain)
                feats = encode(phi, pool.x)
                for budget in args.budgets:
                    base = {"client_domain": domain, "encoder": enc, "budget": budget, "seed": seed}
                    idx = select_random(len(pool.y), budget, numpy_rng(seed, "random", budget))
                    rows.append({**base, "method": "random", "in_domain_fraction": float(in_domain[idx].mean())})
                    idx = select_kcenter(feats, budget)
                    rows.append({**base, "method": "kcenter", "in_domain_fraction": float(in_domain[idx].mean())})
                    for k in args.ks:
                        cloud = CloudIndex(phi, feats, compress(feats, k=k, seed=seed))
                        for r in args.candidate_factors:
                            for method, eps in (("ecos", args.epsilon), ("ecos_no_noise", math.inf)):
                                client = EcosClient("client", pool.client_train, seed=seed, encoder=phi)
                                res = run_ecos(InProcessGrid({"client": client}), cloud,
                                               dataclasses.replace(s0, k=k, budget=budget, epsilon=eps,
                                                                   candidate_factor=r), client="client")
                                row = {**base, "method": method, "k": k, "candidate_factor": r,
                                       "epsilon": res.epsilon, "in_domain_fraction": float(in_domain[res.indices].mean()),
                                       "labelled_fraction": float((pool.y[res.indices] >= 0).float().mean()),
                                       "bytes_down": res.bytes_centroids, "bytes_up": res.bytes_scores}
                                rows.append(row)
                                print(row, flush=True)
    write_json(args.json, {"benchmark": "open_source_sampling --selection-sweep", "args": vars(args),
                           "environment": environment(), "notes": notes, "rows": rows})


if __name__ == "__main__":
    main()
