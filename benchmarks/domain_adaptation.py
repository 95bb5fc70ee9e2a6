"""Benchmark: federated adversarial domain adaptation on digit domains.

The federated transfer learning patent ("Model training method and computing node based on federated
transfer learning") against ADDA (Tzeng et al., CVPR 2017) and the usual references. Tasks:
MNIST->USPS, USPS->MNIST, MNIST->MNIST-M, MNIST+USPS->MNIST-M, MNIST+MNIST-M->USPS; methods:
source_only, fedavg_sources, fada_target, fada_aggregator, adda_centralised, target_supervised.

Protocol of the data (ADDA's MNIST<->USPS protocol): 2,000 MNIST (or MNIST-M) and 1,800 USPS training
images per domain whichever way the task goes (``--n-source`` / ``--n-target`` override); accuracy on
the target's whole test split (``--n-test`` caps it). All images are 28x28, scaled to [-1, 1]; tasks
involving MNIST-M use 3 channels for every domain.

    python benchmarks/domain_adaptation.py --data-dir ../shared/data --json out.json [--quick]

Writes ``{"results": [{"task", "method", "seed", "target_accuracy"}]}``.

Every method uses ADDA's LeNet (``adda_lenet``, no dropout) and mini-batches of ``--batch``:
source_only / target_supervised train ``--pretrain-steps`` Adam steps (1e-3) on the pooled source /
the labelled target data; fedavg_sources is FADA's step 1 alone (with several sources
``--pretrain-rounds`` FedAvg rounds, ``--pretrain-steps`` steps per node in all; with one source it
is source-only training on that node, the same model as source_only); fada_target / fada_aggregator
(the two topologies) and fada_target_step5 (the sources' step 5 on) continue from it for
``--rounds`` rounds; adda_centralised continues from source_only for ``--adda-steps``.
The runs reported in docs/domain_adaptation.md used the defaults (``--threads 1``) and, for the
longer run, ``--methods source_only fada_target adda_centralised --rounds 600 --adda-steps 3000``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from cotrain.data import load_dataset, to_rgb
from cotrain.data.base import ArrayDataset
from cotrain.federated.training import evaluate
from cotrain.models import build_model
from cotrain.models.blocks import BlockModel
from cotrain.seeding import derive_seed, numpy_rng
from cotrain.transfer import LocalPhase, build_discriminator, feature_dim
from cotrain.transfer.baselines import adda_centralised, fedavg_sources, pool, train_supervised
from cotrain.transfer.parties import build_federation
from cotrain.transfer.protocol import FadaSettings

TASKS: dict[str, tuple[tuple[str, ...], str]] = {
    "mnist->usps": (("mnist",), "usps"),
    "usps->mnist": (("usps",), "mnist"),
    "mnist->mnist_m": (("mnist",), "mnist_m"),
    "mnist+usps->mnist_m": (("mnist", "usps"), "mnist_m"),
    "mnist+mnist_m->usps": (("mnist", "mnist_m"), "usps"),
}
METHODS = ("source_only", "fedavg_sources", "fada_target", "fada_aggregator", "fada_target_step5", "adda_centralised",
           "target_supervised")


# ADDA's MNIST<->USPS protocol samples 2,000 MNIST and 1,800 USPS images whichever way the task goes;
# MNIST-M gets MNIST's number. ``--n-source`` / ``--n-target`` override these per role.
DOMAIN_SAMPLES = {"mnist": 2000, "usps": 1800, "mnist_m": 2000}


@dataclass(frozen=True)
class Budget:
    """Data sizes and steps of every method (mini-batches of ``batch``).

    ``n_source`` / ``n_target``: images per source domain / of the target (None: ``DOMAIN_SAMPLES``);
    ``n_test``: target test images (None: the whole test split).
    """

    n_source: int | None = None
    n_target: int | None = None
    n_test: int | None = None
    batch: int = 32
    pretrain_steps: int = 1000       # source_only, target_supervised, and FedAvg steps per source node
    pretrain_rounds: int = 5         # FedAvg rounds the sources' pretraining is split into (several sources)
    rounds: int = 200                # FADA adaptation rounds
    adapt_steps: int = 0             # step 5: source G_s/T_s Adam steps per round (0: step 5 off)
    disc_exchanges: int = 5          # steps 3-4 per round: one SGD step (rate 1) per node, then a server Adam step
    disc_server_lr: float = 2e-4
    target_steps: int = 5            # the target's own-encoder Adam steps per round (0: no own G)
    target_weight: float = 0.999     # its weight in the G aggregate
    adv_weight: float = 1.0          # lambda of the target's own-encoder step (ADDA eq. 9)
    source_adv_weight: float = 0.1   # lambda of the sources' step 5
    step5_steps: int = 5             # fada_target_step5: fada_target with the sources' step 5 on (lambda source_adv_weight)
    sync_sources: bool = False       # sources restart step 5 from the aggregates
    adda_steps: int = 1000


QUICK = Budget(n_source=500, n_target=500, n_test=500, batch=32, pretrain_steps=150, pretrain_rounds=3,
               rounds=10, adda_steps=150)


def _load(name: str, data_dir: str | None, channels: int, split_seed: int) -> tuple[ArrayDataset, ArrayDataset]:
    options = {"size": 28}
    if name == "mnist":
        options = {}
    splits = load_dataset(name, data_dir=data_dir, **options)
    out = []
    for d in (splits.train, splits.test):
        x = d.x if channels == 1 else to_rgb(d.x)
        out.append(ArrayDataset(x=(x - 0.5) / 0.5, y=d.y, name=name, num_classes=10))
    return out[0], out[1]


def _sample(d: ArrayDataset, n: int | None, seed: int, *path: str) -> ArrayDataset:
    if n is None or n >= len(d):
        return d
    return d.subset(numpy_rng(seed, "sample", *path).choice(len(d), size=n, replace=False))


def run_task(task: str, seed: int, methods: tuple[str, ...], budget: Budget, data_dir: str | None,
             cache: dict) -> list[dict]:
    """All ``methods`` on ``task`` for one seed; returns result rows."""
    source_names, target_name = TASKS[task]
    channels = 3 if "mnist_m" in (*source_names, target_name) else 1
    def get(name: str) -> tuple[ArrayDataset, ArrayDataset]:
        if (name, channels) not in cache:
            cache[(name, channels)] = _load(name, data_dir, channels, 0)
        return cache[(name, channels)]
    sources = {f"source_{n}": _sample(get(n)[0], budget.n_source or DOMAIN_SAMPLES[n], seed, task, n)
               for n in source_names}
    target_train = _sample(get(target_name)[0], budget.n_target or DOMAIN_SAMPLES[target_name], seed, task, "target")
    target_test = _sample(get(target_name)[1], budget.n_test, 0, "test", target_name)
    shape = target_test.input_shape
    model = build_model("adda_lenet", input_shape=shape, num_classes=10, seed=derive_seed(seed, "model"), dropout=0.0)
    disc = build_discriminator(feature_dim(model, shape), seed=derive_seed(seed, "disc"))
    b = budget
    several = len(sources) > 1
    pre = LocalPhase(b.pretrain_steps // b.pretrain_rounds if several else b.pretrain_steps,
                     batch_size=b.batch, lr=1e-3, beta1=0.9)
    fedavg_settings = FadaSettings(rounds=0, pretrain_rounds=b.pretrain_rounds if several else 1, pretrain=pre)
    # FADA's step 1 is exactly the fedavg_sources run; its adaptation rounds start from that model.
    fada_settings = FadaSettings(
        rounds=b.rounds, pretrain_rounds=0,
        discriminator=LocalPhase(1, batch_size=b.batch, lr=1.0, beta1=0.0, optimizer="sgd"),
        discriminator_exchanges=b.disc_exchanges, discriminator_server_lr=b.disc_server_lr,
        adapt=LocalPhase(b.adapt_steps, batch_size=b.batch, weight=b.source_adv_weight),
        target_encoder=LocalPhase(b.target_steps, batch_size=b.batch, weight=b.adv_weight) if b.target_steps else None,
        target_weight=b.target_weight, sync_sources=b.sync_sources,
    )
    supervised = LocalPhase(b.pretrain_steps, batch_size=b.batch, lr=1e-3, beta1=0.9)
    rows = []
    trained: dict[str, BlockModel] = {}

    def source_model() -> BlockModel:
        """source_only: supervised training on the pooled source data (trained once per task and seed)."""
        if "source" not in trained:
            trained["source"] = train_supervised(copy.deepcopy(model), pool(list(sources.values())), supervised,
                                                 seed=seed, tag="source")
        return copy.deepcopy(trained["source"])

    def step_one_model() -> BlockModel:
        """FADA's step 1. With one source node it is source-only training on that node's data, so the
        one model is shared: FADA and ADDA then adapt the same start (adversarial adaptation is very
        sensitive to its start, see docs/domain_adaptation.md) and fedavg_sources equals source_only.
        With several sources it is a real FedAvg over the source nodes."""
        if not several:
            return source_model()
        if "fedavg" not in trained:
            trained["fedavg"] = fedavg_sources(copy.deepcopy(model), copy.deepcopy(disc), sources, fedavg_settings,
                                               seed=seed)
        return copy.deepcopy(trained["fedavg"])

    for method in methods:
        t0 = time.perf_counter()
        m, d = copy.deepcopy(model), copy.deepcopy(disc)
        if method == "source_only":
            m = source_model()
        elif method == "adda_centralised":
            xs = torch.cat([s.x for s in sources.values()])
            m = adda_centralised(source_model(), d, xs, target_train.x,
                                 LocalPhase(b.adda_steps, batch_size=b.batch, weight=b.adv_weight), seed=seed)
        elif method in ("fedavg_sources", "fada_target", "fada_aggregator", "fada_target_step5"):
            m = step_one_model()
            if method != "fedavg_sources":
                settings = fada_settings
                if method == "fada_target_step5":
                    settings = replace(fada_settings, adapt=replace(fada_settings.adapt, steps=b.step5_steps))
                fed = build_federation(m, d, sources, target_train.x, topology=method.split("_")[1], seed=seed)
                m = fed.run(m, d, settings).model
        elif method == "target_supervised":
            m = train_supervised(m, target_train, supervised, seed=seed, tag="target")
        else:
            raise ValueError(f"unknown method {method!r}")
        acc = evaluate(m, target_test)["accuracy"]
        rows.append({"task": task, "method": method, "seed": seed, "target_accuracy": acc})
        print(f"{task:22s} {method:18s} seed {seed}  acc {acc:.4f}  ({time.perf_counter() - t0:.0f}s)", flush=True)
    return rows


def summarise(rows: list[dict]) -> str:
    """Mean +- std over seeds per (task, method)."""
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows if r["task"] == task):
            accs = [r["target_accuracy"] for r in rows if r["task"] == task and r["method"] == method]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            lines.append(f"{task:22s} {method:18s} {statistics.mean(accs):.4f} +- {sd:.4f}  (n={len(accs)})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--quick", action="store_true", help="one task, one seed, small budget (~1 minute)")
    p.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=None)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=None)
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    for field in Budget.__dataclass_fields__:
        kind = type(getattr(Budget(), field))
        p.add_argument("--" + field.replace("_", "-"), default=None,
                       type=(lambda v: v.lower() in ("1", "true", "yes")) if kind is bool else kind)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    budget = QUICK if args.quick else Budget()
    budget = replace(budget, **{f: getattr(args, f) for f in Budget.__dataclass_fields__ if getattr(args, f) is not None})
    tasks = args.tasks or (["mnist->usps"] if args.quick else list(TASKS))
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    methods = tuple(args.methods or METHODS)
    print(f"budget: {budget}", flush=True)
    rows: list[dict] = []
    cache: dict = {}
    for task in tasks:
        for seed in seeds:
            rows += run_task(task, seed, methods, budget, args.data_dir, cache)
            if args.json:
                Path(args.json).write_text(json.dumps({"results": rows}, indent=1))
    print(summarise(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
