"""Shared plumbing of the gradient-audit benchmarks: arguments, data, training checkpoints, output."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import torch

from _common import environment  # noqa: F401  (re-exported for the audit benchmarks)
from _common import parser as common_parser

from cotrain.data import load_dataset
from cotrain.data.base import ArrayDataset, DatasetSplits
from cotrain.models import BlockModel, build_model
from cotrain.seeding import torch_generator

# data set -> (load options, private attribute)
TASKS: dict[str, tuple[dict[str, Any], str]] = {
    "mnist": ({}, ""),
    "synthetic": ({"n_train": 4000, "n_test": 1000}, "thickness"),
    "dsprites": ({"task": "shape", "size": 32}, "scale_large"),
    "utkface": ({"task": "race", "size": 32}, "gender"),
}


def parser(description: str) -> argparse.ArgumentParser:
    """The common benchmark arguments (``--data-dir``, ``--json``, ``--quick``, ``--threads``) and ``--seed``."""
    p = common_parser(description)
    p.add_argument("--seed", type=int, default=0)
    return p


def parse(p: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse; a quick run on MNIST switches to the synthetic data (no file reading); set torch's threads."""
    args = p.parse_args()
    if args.quick and args.dataset == "mnist":
        args.dataset = "synthetic"
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def load(name: str, data_dir: str) -> tuple[DatasetSplits, str]:
    options, attribute = TASKS[name]
    return load_dataset(name, data_dir=data_dir, **options), attribute


def train_checkpoints(model_name: str, data: ArrayDataset, steps: list[int], *, seed: int, batch_size: int = 64,
                      lr: float = 0.05, **model_options: Any) -> dict[int, BlockModel]:
    """SGD (momentum 0.9) on ``data``; a copy of the model after each of ``steps`` (sorted) steps."""
    model = build_model(model_name, input_shape=data.input_shape, num_classes=data.num_classes, seed=seed,
                        **model_options)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    gen = torch_generator(seed, "benchmark", "train")
    out: dict[int, BlockModel] = {}
    model.train()
    for step in range(max(steps) + 1):
        if step in steps:
            out[step] = copy.deepcopy(model).eval()
        if step == max(steps):
            break
        idx = torch.randint(len(data), (batch_size,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(data.x[idx]), data.y[idx]).backward()
        opt.step()
    return out


@torch.no_grad()
def accuracy(model: BlockModel, data: ArrayDataset, n: int = 1000) -> float:
    model.eval()
    return float((model(data.x[:n]).argmax(1) == data.y[:n]).float().mean())


def write_outputs(path: str | None, payload: dict[str, Any], default_stem: str) -> Path:
    """Write the JSON (``path`` or ``benchmarks/results/<stem>.json``); return the PNG path beside it."""
    out = Path(path) if path else Path(__file__).resolve().parent / "results" / f"{default_stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    return out.with_suffix(".png")
