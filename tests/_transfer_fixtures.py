"""Tiny federations for the transfer tests (shared helpers; not a test module)."""

from __future__ import annotations

import torch

from cotrain.data.base import ArrayDataset
from cotrain.models import build_model
from cotrain.models.blocks import BlockModel
from cotrain.transfer import DomainDiscriminator, LocalPhase, build_discriminator
from cotrain.transfer.protocol import FadaSettings

SHAPE = (1, 6, 6)
CLASSES = 3
HIDDEN = 16      # G's feature size F
D_HIDDEN = (10,)
SOURCE_SIZES = {"s1": 23, "s2": 19}
TARGET_SIZE = 29
# Batch sizes differ from every parameter dimension (36, 16, 10, 3, 1) and from the data set sizes.
SOURCE_BATCH = 7
TARGET_BATCH = 9
DATA_DIMS = {SOURCE_BATCH, TARGET_BATCH, TARGET_SIZE, *SOURCE_SIZES.values()}


def make_model(seed: int = 0) -> BlockModel:
    return build_model("mlp", input_shape=SHAPE, num_classes=CLASSES, seed=seed, hidden=(HIDDEN,))


def make_disc(seed: int = 1) -> DomainDiscriminator:
    return build_discriminator(HIDDEN, hidden=D_HIDDEN, seed=seed)


def make_source(n: int, seed: int, shift: float = 0.0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    return ArrayDataset(x=torch.randn(n, *SHAPE, generator=g) + shift,
                        y=torch.randint(0, CLASSES, (n,), generator=g), num_classes=CLASSES)


def make_sources(names: tuple[str, ...] = ("s1",)) -> dict[str, ArrayDataset]:
    return {name: make_source(SOURCE_SIZES[name], seed=10 + i) for i, name in enumerate(names)}


def make_target_x(n: int = TARGET_SIZE) -> torch.Tensor:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(99)) * 0.5 + 1.0


def tiny_settings(*, rounds: int = 2, target_encoder: bool = True, pretrain_rounds: int = 2) -> FadaSettings:
    return FadaSettings(
        rounds=rounds, pretrain_rounds=pretrain_rounds,
        pretrain=LocalPhase(3, batch_size=SOURCE_BATCH, lr=1e-2),
        discriminator=LocalPhase(2, batch_size=TARGET_BATCH, lr=0.05, beta1=0.0, optimizer="sgd"),
        adapt=LocalPhase(2, batch_size=SOURCE_BATCH, lr=1e-2),
        target_encoder=LocalPhase(2, batch_size=TARGET_BATCH, lr=1e-2) if target_encoder else None,
        discriminator_exchanges=2,
    )


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def fada_experiment_config(tmp_path, *, run: dict | None = None, **fada):
    """A tiny ``fada`` experiment on generated 16x16 domains: 2 sources, 1 pre-training + 2 rounds."""
    from cotrain.experiment.config import config_from_dict

    return config_from_dict({
        "run": {"name": "fada", "output_dir": str(tmp_path), "seed": 1, **(run or {})},
        "data": {"dataset": "synthetic", "participants": 2, "max_train_samples": 90, "max_test_samples": 30,
                 "options": {"n_train": 90, "n_test": 30, "size": 16, "num_domains": 1}},
        "model": {"name": "small_cnn", "options": {"width": 4}},
        "method": {"name": "fada"},
        "fada": {"target_dataset": "synthetic", "target_max_train": 50, "target_max_test": 30,
                 "target_options": {"n_train": 50, "n_test": 30, "size": 16, "num_domains": 1, "seed": 7},
                 "rounds": 2, "pretrain_steps": 3, "batch_size": 13, "disc_exchanges": 2, "adapt_steps": 2,
                 **fada},
    })
