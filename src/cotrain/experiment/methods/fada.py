"""The ``fada`` method: federated adversarial domain adaptation (:mod:`cotrain.transfer`) as an experiment.

The federated transfer learning patent ("Model training method and computing node based on
federated transfer learning"), ADDA-style (Tzeng et al., CVPR 2017). ``[data]`` is the labelled
source domain, split across ``[data] participants`` source nodes; ``[fada] target_dataset`` is the
target domain, whose training inputs (no labels, unless ``target_labels > 0``) the target node holds.
Accuracy each round is the aggregate model's on the target's test split, scored by the experiment
(no node holds those labels).

Runs in process and on both Flower engines (the same numbers for the same seed): every exchange is
per round. The target node is the Flower server in the ``target`` topology, a Flower node in the
``aggregator`` topology.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

import cotrain.transfer.encoders  # noqa: F401  (registers the "adda_lenet" model for [model] name)
from cotrain.experiment.method import Method, MethodOutcome, RunContext, register_method
from cotrain.experiment.records import ExperimentRound
from cotrain.experiment.section import Section
from cotrain.experiment.flower import config_job
from cotrain.transfer.protocol import FadaSettings

if TYPE_CHECKING:
    import torch

    from cotrain.data.base import ArrayDataset
    from cotrain.experiment.config import ExperimentConfig
    from cotrain.transfer.protocol import FadaRound


_DEFAULTS = FadaSettings()
TOML_DEFAULTS = {"rounds": 30, "target_weight": 0.999, "sync_sources": False, "disc_steps": 1, "disc_lr": 1.0,
                 "disc_exchanges": 5, "disc_server_lr": 2e-4, "target_encoder_steps": 5}
"""Where ``[fada]`` deliberately differs from :class:`~cotrain.transfer.FadaSettings`: the settings
measured best at ADDA's data protocol (docs/domain_adaptation.md: one SGD step of rate 1 per node
and 5 exchanges with a FedAdam server step for D, the target's own encoder at weight 0.999, no
step 5 sync, 30 rounds), while the protocol's own defaults stay the plain patent reading."""


class FadaSection(Section):
    """``[fada]``: target domain, topology, rounds and the local phases (see :class:`cotrain.transfer.FadaSettings`;
    its defaults, except :data:`TOML_DEFAULTS`)."""

    target_dataset: str = "usps"
    target_options: dict[str, Any] = Field(default_factory=dict)
    target_max_train: int | None = Field(None, ge=1)
    target_max_test: int | None = Field(None, ge=1)
    target_labels: int = Field(0, ge=0, description="labelled target examples (0: the target holds no label)")
    channels: int | None = Field(None, ge=1, le=3, description="convert every domain to 1 or 3 channels")
    size: int | None = Field(None, ge=8, description="resize every domain to size x size")
    normalize: bool = True
    topology: Literal["target", "aggregator"] = "target"
    rounds: int = Field(TOML_DEFAULTS["rounds"], ge=0)
    pretrain_rounds: int = Field(_DEFAULTS.pretrain_rounds, ge=1)
    pretrain_steps: int = Field(_DEFAULTS.pretrain.steps, ge=1)
    pretrain_lr: float = Field(_DEFAULTS.pretrain.lr, gt=0)
    batch_size: int = Field(_DEFAULTS.pretrain.batch_size, ge=1)
    disc_steps: int = Field(TOML_DEFAULTS["disc_steps"], ge=1, description="local SGD steps per node per exchange")
    disc_lr: float = Field(TOML_DEFAULTS["disc_lr"], gt=0, description="local SGD rate (1: the upload is the gradient)")
    disc_server_lr: float | None = Field(TOML_DEFAULTS["disc_server_lr"], gt=0,
                                         description="FedAdam rate at the aggregator; None: plain average")
    disc_exchanges: int = Field(TOML_DEFAULTS["disc_exchanges"], ge=1)
    adapt_steps: int = Field(0, ge=0, description="the sources' step 5 per round (0: off; measured to lower "
                             "target accuracy, see docs/domain_adaptation.md)")
    adapt_lr: float = Field(_DEFAULTS.adapt.lr, gt=0)
    source_adv_weight: float = Field(0.1, ge=0, description="lambda of the sources' step 5")
    adv_weight: float = Field(_DEFAULTS.adapt.weight, ge=0, description="lambda of the target's own-encoder step")
    target_encoder_steps: int = Field(TOML_DEFAULTS["target_encoder_steps"], ge=0,
                                      description="0: the target has no G of its own")
    target_weight: float = Field(TOML_DEFAULTS["target_weight"], ge=0, lt=1,
                                 description="the target's own G in the G aggregate")
    sync_sources: bool = TOML_DEFAULTS["sync_sources"]


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
    return ExperimentRound(round=r.round, test_accuracy=r.metrics.get("accuracy", float("nan")),
                           test_loss=r.metrics.get("loss", float("nan")), seconds=r.seconds, bytes_up=r.bytes_up,
                           bytes_down=r.bytes_down, participants=list(participants),
                           participant_metrics={p: {"train_loss": v} for p, v in r.source_losses.items()},
                           aggregation=r.aggregation, extra={"phase": r.phase}).to_json()


@dataclass
class FadaSetup:
    """Everything a FADA run is built from, a pure function of the config (so every process builds the same)."""

    cfg: Any
    data: Any
    sources: dict[str, "ArrayDataset"]
    target_train: "ArrayDataset"
    target_test: "ArrayDataset"
    target_labels: Any
    target_index: Any
    model: Any
    discriminator: Any
    settings: FadaSettings

    def source_node(self, pid: str) -> Any:
        """Source node ``pid`` with the run's attack and defences applied: the one place sources are built."""
        from cotrain.behaviours import behave
        from cotrain.experiment.setup import run_behaviours
        from cotrain.transfer import SourceNode

        spec = run_behaviours(self.cfg, len(self.sources))
        chosen, context = spec.for_participant(pid, seed=self.cfg.run.seed, num_participants=len(self.sources))
        return behave(lambda local: SourceNode(pid, model=copy.deepcopy(self.model),
                                               discriminator=copy.deepcopy(self.discriminator), data=local,
                                               seed=self.cfg.run.seed),
                      self.sources[pid], chosen, context)

    def target_node(self) -> Any:
        from cotrain.transfer import TargetNode

        return TargetNode(self.target_train.x, model=copy.deepcopy(self.model),
                          discriminator=copy.deepcopy(self.discriminator), seed=self.cfg.run.seed,
                          labels=self.target_labels, labelled_index=self.target_index)

    def serve(self, grid: Any, *, on_round: Any = None, checkpoint: Any = None) -> Any:
        """The aggregating party's loop on ``grid`` (the target itself in the ``target`` topology)."""
        from cotrain.experiment.crosscutting.aggregation import run_aggregator
        from cotrain.federated import evaluate
        from cotrain.transfer.protocol import run_fada

        local = self.target_node() if self.cfg.fada.topology == "target" else None
        from cotrain.federated.checkpoint import NO_CHECKPOINT

        return run_fada(grid, self.model, self.discriminator, self.settings, target=local,
                        evaluate=lambda m: evaluate(m, self.target_test), on_round=on_round,
                        aggregator=run_aggregator(self.cfg), seed=self.cfg.run.seed,
                        checkpoint=checkpoint if checkpoint is not None else NO_CHECKPOINT)


def fada_setup(cfg: "ExperimentConfig") -> FadaSetup:
    """Load the source and target domains, build the shared initial G, T and D and the settings."""
    import torch

    from cotrain.errors import ConfigError
    from cotrain.experiment.prepare import check_model_options, load_domain, prepare_data, under_key
    from cotrain.experiment.setup import build_global_model, participant_id
    from cotrain.seeding import derive_seed, numpy_rng
    from cotrain.transfer import LocalPhase, build_discriminator, feature_dim

    s, seed = cfg.fada, cfg.run.seed
    data = prepare_data(cfg)
    splits = load_domain(cfg, "fada.target_dataset", s.target_dataset, dict(s.target_options),
                         max_train=s.target_max_train, max_test=s.target_max_test, stream="fada-target")
    target_train, target_test = _prepare(splits.train, s), _prepare(splits.test, s)
    sources = {participant_id(i): _prepare(data.participant_data(i), s) for i in range(len(data.parts))}
    shapes = {d.input_shape for d in sources.values()} | {target_train.input_shape}
    if len(shapes) != 1:
        raise ConfigError(f"fada.size: source and target inputs differ in shape {sorted(shapes)}; "
                          "set fada.size and fada.channels", key="fada.size")
    labels = index = None
    if s.target_labels:
        index = torch.as_tensor(numpy_rng(seed, "fada-target-labels").choice(
            len(target_train), size=min(s.target_labels, len(target_train)), replace=False))
        labels = target_train.y[index]
    shape = target_train.input_shape
    check_model_options(cfg)
    model = under_key("model.options", lambda: build_global_model(cfg, _Shaped(data, shape)))
    disc = build_discriminator(feature_dim(model, shape), seed=derive_seed(seed, "discriminator"))
    phase = dict(batch_size=s.batch_size)
    settings = under_key("fada", lambda: FadaSettings(
        rounds=s.rounds, pretrain_rounds=s.pretrain_rounds,
        pretrain=LocalPhase(s.pretrain_steps, lr=s.pretrain_lr, beta1=0.9, **phase),
        discriminator=LocalPhase(s.disc_steps, lr=s.disc_lr, beta1=0.0, optimizer="sgd", **phase),
        adapt=LocalPhase(s.adapt_steps, lr=s.adapt_lr, weight=s.source_adv_weight, **phase),
        target_encoder=(LocalPhase(s.target_encoder_steps, lr=s.adapt_lr, weight=s.adv_weight, **phase)
                        if s.target_encoder_steps else None),
        target_weight=s.target_weight, discriminator_exchanges=s.disc_exchanges,
        discriminator_server_lr=s.disc_server_lr, sync_sources=s.sync_sources))
    return FadaSetup(cfg, data, sources, target_train, target_test, labels, index, model, disc, settings)


def _num_parties(cfg: "ExperimentConfig") -> int:
    return cfg.data.participants + (1 if cfg.fada.topology == "aggregator" else 0)


def _party_id(cfg: "ExperimentConfig", index: int) -> str:
    """Sources are ``participant-000``...; the target node (aggregator topology) is ``target``."""
    from cotrain.experiment.setup import participant_id

    return "target" if index == cfg.data.participants else participant_id(index)


def _exchanges(cfg: "ExperimentConfig") -> int:
    """About how many exchanges a run makes: pretraining, then per round the discriminator's and two more."""
    return cfg.fada.pretrain_rounds + cfg.fada.rounds * (cfg.fada.disc_exchanges + 2)


def _fada_party(cfg: "ExperimentConfig", index: int) -> Any:
    """Party ``index``: source node ``index``, or the target node (index N, aggregator topology)."""
    return _fada_party_of(_cached_setup(cfg), index)


_SETUPS: dict[str, FadaSetup] = {}


def _cached_setup(cfg: "ExperimentConfig") -> FadaSetup:
    key = cfg.model_dump_json()
    if key not in _SETUPS:  # one Flower process answers many messages: load the domains once
        _SETUPS.clear()
        _SETUPS[key] = fada_setup(cfg)
    return _SETUPS[key]


def _serve(grid: Any, cfg: "ExperimentConfig") -> Any:
    from cotrain.federated import model_state
    from cotrain.runtime.job import ServerResult

    setup = fada_setup(cfg)
    ids = sorted(setup.sources)
    result = setup.serve(grid)
    return ServerResult([round_json(r, ids) for r in result.history], model_state(setup.model))


FLOWER_JOB = config_job(serve=_serve, build_participant=_fada_party, num_participants=_num_parties,
                        participant_id=_party_id, exchanges=_exchanges)


@register_method("fada", section=FadaSection, uses=("aggregation", "attack", "defence"))
class FederatedAdversarialDA(Method):
    """Source nodes (``[data]``) and a target node (``[fada] target_dataset``) exchanging parameters only."""

    flower_job = "cotrain.experiment.methods.fada:FLOWER_JOB"

    def __init__(self, cfg: "ExperimentConfig") -> None:
        from cotrain.experiment.prepare import require_runtime

        super().__init__(cfg)
        require_runtime(cfg, ("inprocess", "parallel", "flower-simulation", "flower-deployment"), "")
        self.setup = fada_setup(cfg)
        self.data, self.sources, self.target_test = self.setup.data, self.setup.sources, self.setup.target_test

    @property
    def total_rounds(self) -> int:
        return self.cfg.fada.pretrain_rounds + self.cfg.fada.rounds

    @property
    def resumable(self) -> bool:
        return self.cfg.run.runtime == "inprocess"

    def partition_view(self) -> Any:
        return self.data.splits.train, self.data.parts

    @property
    def test_samples(self) -> int:
        return len(self.target_test)

    def run(self, ctx: RunContext) -> MethodOutcome:
        from cotrain.experiment.report import key_value_html
        from cotrain.federated import model_state
        from cotrain.runtime import InProcessGrid

        ids = sorted(self.sources)
        if self.cfg.run.runtime == "inprocess":
            parties = {_party_id(self.cfg, i): _fada_party_of(self.setup, i) for i in range(_num_parties(self.cfg))}
            grid = InProcessGrid(parties)
            result = self.setup.serve(grid, on_round=lambda r: ctx.on_round(round_json(r, ids)),
                                      checkpoint=ctx.round_hook(ledger=grid.ledger, participants=parties))
            history, ledger, state = [round_json(r, ids) for r in result.history], grid.ledger, \
                model_state(self.setup.model)
        elif self.cfg.run.runtime == "parallel":  # each worker builds the domains once (_cached_setup)
            from functools import partial

            from cotrain.experiment.parallel import parallel_grid

            party_ids = [_party_id(self.cfg, i) for i in range(_num_parties(self.cfg))]
            with parallel_grid(self.cfg, partial(_fada_party, self.cfg), party_ids) as grid:
                result = self.setup.serve(grid, on_round=lambda r: ctx.on_round(round_json(r, ids)))
            history, ledger, state = [round_json(r, ids) for r in result.history], grid.ledger, \
                model_state(self.setup.model)
        else:
            history, ledger, state, _ = self.run_on_flower(ctx)
        summary: dict[str, Any] = {
            "topology": self.cfg.fada.topology, "target_dataset": self.cfg.fada.target_dataset,
            "aggregator": self.cfg.aggregation.name,
            "target_accuracy": history[-1].get("test_accuracy") if history else None,
            "payloads": sorted({e.payload for e in ledger.entries}),
            "bytes_total": ledger.total_bytes()}
        ctx.report.add_section("Federated adversarial domain adaptation", key_value_html(summary))
        return MethodOutcome(history=history, ledger=ledger, model_state=state, summary=summary,
                             participant_rows=[{"participant": p, "train_samples": len(d), "role": "source"}
                                               for p, d in self.sources.items()])


def _fada_party_of(setup: FadaSetup, index: int) -> Any:
    from cotrain.experiment.setup import participant_id
    from cotrain.transfer.nodes import TargetParticipant

    if index == setup.cfg.data.participants:
        return TargetParticipant(setup.target_node())
    return setup.source_node(participant_id(index))


class _Shaped:
    """``ExperimentData`` seen with the prepared input shape (for :func:`build_global_model`)."""

    def __init__(self, data: Any, shape: tuple[int, ...]) -> None:
        import torch

        from cotrain.data.base import ArrayDataset, DatasetSplits

        probe = ArrayDataset(x=torch.zeros(1, *shape), y=torch.zeros(1, dtype=torch.long),
                             num_classes=data.splits.train.num_classes)
        self.splits = DatasetSplits(train=probe, test=probe)
        self.parts = data.parts
