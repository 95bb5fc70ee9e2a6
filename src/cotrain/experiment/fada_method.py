"""The ``fada`` method: federated adversarial domain adaptation (:mod:`cotrain.transfer`) as an experiment.

The federated transfer learning patent ("Model training method and computing node based on
federated transfer learning"), ADDA-style (Tzeng et al., CVPR 2017). ``[data]`` is the labelled
source domain, split across ``[data] participants`` source nodes; ``[fada] target_dataset`` is the
target domain, whose training inputs (no labels, unless ``target_labels > 0``) the target node holds.
Accuracy each round is the aggregate model's on the target's test split, scored by the experiment
(no node holds those labels).

Wiring (two lines in the experiment layer): ``fada: FadaSection = Field(default_factory=FadaSection)``
on ``ExperimentConfig``, and ``import cotrain.experiment.fada_method`` where built-in methods are imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

import cotrain.transfer.encoders  # noqa: F401  (registers the "adda_lenet" model for [model] name)
from cotrain.experiment.methods import Method, MethodOutcome, RunContext, register_method

if TYPE_CHECKING:
    import torch

    from cotrain.data.base import ArrayDataset
    from cotrain.experiment.config import ExperimentConfig
    from cotrain.transfer.protocol import FadaRound


class FadaSection(BaseModel):
    """``[fada]``: target domain, topology, rounds and the local phases (see :class:`cotrain.transfer.FadaSettings`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)

    target_dataset: str = "usps"
    target_options: dict[str, Any] = Field(default_factory=dict)
    target_max_train: int | None = Field(None, ge=1)
    target_max_test: int | None = Field(None, ge=1)
    target_labels: int = Field(0, ge=0, description="labelled target examples (0: the target holds no label)")
    channels: int | None = Field(None, ge=1, le=3, description="convert every domain to 1 or 3 channels")
    size: int | None = Field(None, ge=8, description="resize every domain to size x size")
    normalize: bool = True
    topology: Literal["target", "aggregator"] = "target"
    rounds: int = Field(30, ge=0)
    pretrain_rounds: int = Field(1, ge=1)
    pretrain_steps: int = Field(500, ge=1)
    pretrain_lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    disc_steps: int = Field(1, ge=1, description="local SGD steps per node per exchange")
    disc_lr: float = Field(1.0, gt=0, description="local SGD rate (1: the upload is the gradient)")
    disc_server_lr: float | None = Field(2e-4, gt=0, description="FedAdam rate at the aggregator; None: plain average")
    disc_exchanges: int = Field(5, ge=1)
    adapt_steps: int = Field(0, ge=0, description="the sources' step 5 per round (0: off; measured to lower "
                             "target accuracy, see docs/domain_adaptation.md)")
    adapt_lr: float = Field(2e-4, gt=0)
    source_adv_weight: float = Field(0.1, ge=0, description="lambda of the sources' step 5")
    adv_weight: float = Field(1.0, ge=0, description="lambda of the target's own-encoder step")
    target_encoder_steps: int = Field(5, ge=0, description="0: the target has no G of its own")
    target_weight: float = Field(0.999, ge=0, lt=1, description="the target's own G in the G aggregate")
    sync_sources: bool = False


def _prepare(d: "ArrayDataset", s: FadaSection) -> "ArrayDataset":
    import dataclasses

    from cotrain.data.transforms import resize, to_grayscale, to_rgb

    x = d.x
    if s.size is not None:
        x = resize(x, s.size)
    if s.channels == 3:
        x = to_rgb(x)
    elif s.channels == 1:
        x = to_grayscale(x)
    if s.normalize:
        x = (x - 0.5) / 0.5
    return dataclasses.replace(d, x=x)


def round_json(r: "FadaRound", participants: list[str]) -> dict[str, Any]:
    """A FADA round in the experiment's round format."""
    return {"round": r.round, "phase": r.phase, "test_accuracy": r.metrics.get("accuracy", float("nan")),
            "test_loss": r.metrics.get("loss", float("nan")), "seconds": r.seconds, "bytes_up": r.bytes_up,
            "bytes_down": r.bytes_down, "participants": participants,
            "participant_metrics": {p: {"train_loss": v} for p, v in r.source_losses.items()}}


@register_method("fada")
class FederatedAdversarialDA(Method):
    """Source nodes (``[data]``) and a target node (``[fada] target_dataset``) exchanging parameters only."""

    def __init__(self, cfg: "ExperimentConfig") -> None:
        super().__init__(cfg)
        import torch

        from cotrain.data import load_dataset
        from cotrain.experiment.errors import ConfigError
        from cotrain.experiment.fedavg import prepare_data, under_key
        from cotrain.experiment.setup import _cap, build_global_model, participant_id
        from cotrain.seeding import derive_seed, numpy_rng
        from cotrain.transfer import LocalPhase, build_discriminator, feature_dim
        from cotrain.transfer.parties import build_federation
        from cotrain.transfer.protocol import FadaSettings

        s, seed = cfg.fada, cfg.run.seed
        if cfg.run.runtime != "inprocess":
            raise ConfigError("run.runtime: the fada method runs in process", key="run.runtime")
        self.data = prepare_data(cfg)
        splits = under_key("fada.target_dataset",
                           lambda: load_dataset(s.target_dataset, data_dir=cfg.data.data_dir, **s.target_options))
        target_train = _prepare(_cap(splits.train, s.target_max_train, seed, "fada-target-train"), s)
        self.target_test = _prepare(_cap(splits.test, s.target_max_test, seed, "fada-target-test"), s)
        self.sources = {participant_id(i): _prepare(self.data.participant_data(i), s)
                        for i in range(len(self.data.parts))}
        shapes = {d.input_shape for d in self.sources.values()} | {target_train.input_shape}
        if len(shapes) != 1:
            raise ConfigError(f"fada: source and target inputs differ in shape {sorted(shapes)}; "
                              "set fada.size and fada.channels", key="fada.size")
        labels = index = None
        if s.target_labels:
            index = torch.as_tensor(numpy_rng(seed, "fada-target-labels").choice(
                len(target_train), size=min(s.target_labels, len(target_train)), replace=False))
            labels = target_train.y[index]
        shape = target_train.input_shape
        self.model = under_key("model.options", lambda: build_global_model(cfg, _Shaped(self.data, shape)))
        self.disc = build_discriminator(feature_dim(self.model, shape), seed=derive_seed(seed, "discriminator"))
        phase = dict(batch_size=s.batch_size)
        self.settings = under_key("fada", lambda: FadaSettings(
            rounds=s.rounds, pretrain_rounds=s.pretrain_rounds,
            pretrain=LocalPhase(s.pretrain_steps, lr=s.pretrain_lr, beta1=0.9, **phase),
            discriminator=LocalPhase(s.disc_steps, lr=s.disc_lr, beta1=0.0, optimizer="sgd", **phase),
            adapt=LocalPhase(s.adapt_steps, lr=s.adapt_lr, weight=s.source_adv_weight, **phase),
            target_encoder=(LocalPhase(s.target_encoder_steps, lr=s.adapt_lr, weight=s.adv_weight, **phase)
                            if s.target_encoder_steps else None),
            target_weight=s.target_weight, discriminator_exchanges=s.disc_exchanges,
            discriminator_server_lr=s.disc_server_lr, sync_sources=s.sync_sources))
        self.federation = build_federation(self.model, self.disc, self.sources, target_train.x, topology=s.topology,
                                           seed=seed, target_labels=labels, target_labelled_index=index)

    @property
    def total_rounds(self) -> int:
        return self.cfg.fada.pretrain_rounds + self.cfg.fada.rounds

    def partition_view(self) -> Any:
        return self.data.splits.train, self.data.parts

    def run(self, ctx: RunContext) -> MethodOutcome:
        from cotrain.experiment.report import key_value_html
        from cotrain.federated import evaluate, model_state

        ids = sorted(self.sources)
        result = self.federation.run(self.model, self.disc, self.settings,
                                     evaluate=lambda m: evaluate(m, self.target_test),
                                     on_round=lambda r: ctx.on_round(round_json(r, ids)))
        ledger = self.federation.grid.ledger
        summary: dict[str, Any] = {
            "topology": self.cfg.fada.topology, "target_dataset": self.cfg.fada.target_dataset,
            "target_accuracy": result.history[-1].metrics.get("accuracy") if result.history else None,
            "payloads": sorted({e.payload for e in ledger.entries}),
            "bytes_total": ledger.total_bytes()}
        ctx.report.add_section("Federated adversarial domain adaptation", key_value_html(summary))
        return MethodOutcome(history=[round_json(r, ids) for r in result.history], ledger=ledger,
                             model_state=model_state(self.model), summary=summary,
                             participant_rows=[{"participant": p, "train_samples": len(d), "role": "source"}
                                               for p, d in self.sources.items()])


class _Shaped:
    """``ExperimentData`` seen with the prepared input shape (for :func:`build_global_model`)."""

    def __init__(self, data: Any, shape: tuple[int, ...]) -> None:
        import torch

        from cotrain.data.base import ArrayDataset, DatasetSplits

        probe = ArrayDataset(x=torch.zeros(1, *shape), y=torch.zeros(1, dtype=torch.long),
                             num_classes=data.splits.train.num_classes)
        self.splits = DatasetSplits(train=probe, test=probe)
        self.parts = data.parts
