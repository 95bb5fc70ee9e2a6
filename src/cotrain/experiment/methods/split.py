"""The ``split`` method: split learning / SplitFed (:mod:`cotrain.split`) as an experiment.

Runs in process, on Flower (``run.runtime = "flower-simulation"`` or ``"flower-deployment"``: the
centre is the ServerApp, each agent a ClientApp rebuilt per message, which recomputes its pending
front pass at BACKWARD; see :mod:`cotrain.split.agent`), or across processes with
:func:`cotrain.split.launch.launch` (torch RPC). Its exchanges are per mini-batch, so on Flower each
costs the engine's floor per exchange (about 0.1 s simulation, 7 s deployment, measured here).

The report gets a "Split learning" section: bytes per epoch read from the ledger beside the closed
form 2pq s_a + p s_y + 2K beta|W| and FedAvg's 2K|W| (see :mod:`cotrain.split.cost`), the
crossover K*, and, with ``leakage_samples > 0``, how well the centre infers ``leakage_attribute``
from the cut-layer activations it received in the last epoch.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from cotrain.experiment.flower import config_job
from cotrain.experiment.method import Method, MethodOutcome, RunContext, register_method
from cotrain.experiment.records import ExperimentRound
from cotrain.experiment.section import Section
from cotrain.split.messages import SplitSettings

if TYPE_CHECKING:
    from cotrain.experiment.config import ExperimentConfig
    from cotrain.split.protocols import EpochRecord

_DEFAULTS = SplitSettings()
TOML_DEFAULTS = {"epochs": 5}
"""Where ``[split]`` deliberately differs from :class:`SplitSettings`: a run from a config file
trains 5 epochs (one epoch barely moves a small CNN), while the protocol's own default stays 1."""


class SplitSection(Section):
    """``[split]``: variant, cut (block index or name), U-shaped tail cut, training and leakage settings.
    Defaults are :class:`~cotrain.split.SplitSettings`' except :data:`TOML_DEFAULTS`."""

    variant: Literal["sequential", "sflv1", "sflv2"] = _DEFAULTS.variant  # type: ignore[assignment]
    cut: int | str = _DEFAULTS.cut
    tail_cut: int | str | None = _DEFAULTS.tail_cut
    epochs: int = Field(TOML_DEFAULTS["epochs"], ge=1)
    batch_size: int = Field(_DEFAULTS.batch_size, ge=1)
    lr: float = Field(_DEFAULTS.lr, gt=0)
    momentum: float = Field(_DEFAULTS.momentum, ge=0, lt=1)
    weight_decay: float = Field(_DEFAULTS.weight_decay, ge=0)
    leakage_samples: int = Field(0, ge=0, description="0: no leakage measurement")
    leakage_attribute: str = "label"

    def settings(self) -> SplitSettings:
        return SplitSettings(variant=self.variant, cut=self.cut, tail_cut=self.tail_cut, epochs=self.epochs,
                             batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
                             weight_decay=self.weight_decay)


def epoch_json(record: "EpochRecord", participants: list[str]) -> dict[str, Any]:
    """An epoch record in the experiment's round format (round = epoch)."""
    return ExperimentRound(round=record.epoch, test_accuracy=record.test_accuracy, test_loss=record.test_loss,
                           seconds=record.seconds, bytes_up=record.bytes_up, bytes_down=record.bytes_down,
                           participants=list(participants), aggregation=record.aggregation,
                           extra={"train_loss": record.train_loss,
                                  "critical_path_seconds": record.critical_path_seconds}).to_json()


@lru_cache(maxsize=1)
def _whole_data(description: str) -> Any:
    """The experiment data, loaded once per process (a Flower process answers many messages)."""
    from cotrain.experiment.flower import decode
    from cotrain.experiment.prepare import prepare_data

    return prepare_data(decode(description))


def _agent_data(cfg: "ExperimentConfig", index: int) -> Any:
    """What agent ``index``'s node holds: its node cache's partition, else the whole data (once)."""
    from cotrain.experiment.setup import node_data
    from cotrain.runtime.nodecache import node_cache, node_setting

    if node_cache() is None and not node_setting("data-dir"):
        return _whole_data(cfg.model_dump_json())
    return node_data(cfg, index)


def _split_participant(cfg: "ExperimentConfig", index: int) -> Any:
    from cotrain.experiment.setup import run_behaviours

    return build_split_agent(cfg, index, _agent_data(cfg, index), run_behaviours(cfg, cfg.data.participants))


def _exchanges(cfg: "ExperimentConfig") -> int:
    """Exchanges of a run: per epoch BEGIN and END, and per mini-batch step FORWARD, BACKWARD (and
    HEAD when U-shaped); agents in turn for sequential training, together otherwise."""
    import math

    s, data = cfg.split, _whole_data(cfg.model_dump_json())
    steps = [math.ceil(len(part) / s.batch_size) * (3 if s.tail_cut is not None else 2) for part in data.parts]
    per_epoch = sum(2 + k for k in steps) if s.variant == "sequential" else 2 + max(steps)
    return s.epochs * per_epoch


def _serve(grid: Any, cfg: "ExperimentConfig") -> Any:
    """The centre on any grid: the same model, rule, evaluation and observer as in process; the
    leakage score (the evaluator's, not the centre's: it knows the agents' data) as an artefact."""
    from cotrain.audit.split_leakage import ActivationRecorder
    from cotrain.experiment.crosscutting.aggregation import run_aggregator
    from cotrain.experiment.prepare import prepare_data
    from cotrain.experiment.setup import build_global_model, participant_id, run_behaviours
    from cotrain.federated import evaluate, model_state
    from cotrain.runtime.job import ServerResult
    from cotrain.split import run_split

    s, seed = cfg.split, cfg.run.seed
    data = prepare_data(cfg)
    model = build_global_model(cfg, data)
    recorder = ActivationRecorder(epoch=s.epochs, limit=s.leakage_samples)
    aggregator = run_aggregator(cfg)
    root, scored = split_root(cfg, aggregator, data)
    history = run_split(grid, model, s.settings(), seed=seed, evaluate=lambda m: evaluate(m, scored), root=root,
                        observers=[recorder] if s.leakage_samples else None, aggregator=aggregator)
    ids = grid.participant_ids()
    artifacts: dict[str, Any] = {}
    if s.leakage_samples:  # scoring only: which samples each agent sent last, from its batch-order stream
        behaviours = run_behaviours(cfg, len(data.parts))
        agents = {participant_id(i): build_split_agent(cfg, i, data, behaviours) for i in range(len(data.parts))}
        for agent in agents.values():
            agent.replay_order(s.epochs, s.batch_size)
        artifacts["leakage"] = split_leakage(cfg, data, model, recorder, agents)
    return ServerResult([epoch_json(r, ids) for r in history], model_state(model), artifacts)


FLOWER_JOB = config_job(serve=_serve, build_participant=_split_participant,
                        num_participants=lambda cfg: cfg.data.participants,
                        participant_id=lambda cfg, i: _participant_id(i), exchanges=_exchanges)


def _participant_id(index: int) -> str:
    from cotrain.experiment.setup import participant_id

    return participant_id(index)


@register_method("split", section=SplitSection, uses=("aggregation", "attack", "defence"))
class SplitLearning(Method):
    """Split learning between a computing centre and ``[data] participants`` agents."""

    round_word = "epoch"  # one record per pass over the data, not a federated round
    flower_job = "cotrain.experiment.methods.split:FLOWER_JOB"

    def __init__(self, cfg: "ExperimentConfig") -> None:
        super().__init__(cfg)
        from cotrain.errors import ConfigError
        from cotrain.experiment.crosscutting.aggregation import run_aggregator
        from cotrain.experiment.prepare import check_model_options, prepare_data, require_runtime, under_key
        from cotrain.experiment.setup import build_global_model, participant_id, run_behaviours
        from cotrain.split import split_model

        s = cfg.split
        require_runtime(cfg, ("inprocess", "flower-simulation", "flower-deployment"),
                        "its exchanges are per mini-batch; across processes without Flower use "
                        "cotrain.split.launch (torch.distributed.rpc)")
        self.settings = under_key("split", s.settings)
        self.data = prepare_data(cfg)
        check_model_options(cfg)
        self.model = under_key("model.options", lambda: build_global_model(cfg, self.data))
        self.aggregator = run_aggregator(cfg)
        self.behaviours = run_behaviours(cfg, len(self.data.parts))
        under_key("split.cut", lambda: split_model(self.model, s.cut, s.tail_cut))
        self.root, self.scored = split_root(cfg, self.aggregator, self.data)
        train = self.data.splits.train
        if s.leakage_samples and s.leakage_attribute != "label" and s.leakage_attribute not in train.attributes:
            raise ConfigError(f"split.leakage_attribute: {cfg.data.dataset!r} has no attribute "
                              f"{s.leakage_attribute!r}; it has: label, {', '.join(sorted(train.attributes))}",
                              key="split.leakage_attribute")
        self.agents = {participant_id(i): build_split_agent(cfg, i, self.data, self.behaviours)
                       for i in range(len(self.data.parts))}

    @property
    def total_rounds(self) -> int:
        return self.cfg.split.epochs

    @property
    def resumable(self) -> bool:
        return self.cfg.run.runtime == "inprocess"

    @property
    def test_samples(self) -> int:
        return len(self.scored)

    def partition_view(self) -> Any:
        return self.data.splits.train, self.data.parts

    def run(self, ctx: RunContext) -> MethodOutcome:
        from cotrain.audit.split_leakage import ActivationRecorder
        from cotrain.experiment.report import key_value_html
        from cotrain.federated import evaluate, model_state
        from cotrain.runtime import InProcessGrid
        from cotrain.split import communication_model, run_split

        s = self.cfg.split
        leakage = None
        if self.cfg.run.runtime == "inprocess":
            grid = InProcessGrid(self.agents)
            ids = grid.participant_ids()
            recorder = ActivationRecorder(epoch=s.epochs, limit=s.leakage_samples)
            history = run_split(grid, self.model, self.settings, seed=self.cfg.run.seed,
                                evaluate=lambda m: evaluate(m, self.scored), root=self.root,
                                on_epoch=lambda r: ctx.on_round(epoch_json(r, ids)),
                                observers=[recorder] if s.leakage_samples else None, aggregator=self.aggregator,
                                checkpoint=ctx.round_hook(ledger=grid.ledger, participants=self.agents))
            records, ledger, state = [epoch_json(r, ids) for r in history], grid.ledger, model_state(self.model)
            if s.leakage_samples:
                leakage = split_leakage(self.cfg, self.data, self.model, recorder, self.agents)
        else:  # the centre is the ServerApp, each agent a ClientApp
            records, ledger, state, artifacts = self.run_on_flower(ctx)
            leakage = artifacts.get("leakage")
        train = self.data.splits.train
        cm = communication_model(self.model, train.input_shape, len(train), s.cut, s.tail_cut)
        k = len(self.agents)
        per_epoch = [r["bytes_up"] + r["bytes_down"] for r in records]
        summary: dict[str, Any] = {
            "aggregator": self.cfg.aggregation.name, "malicious": list(self.behaviours.malicious),
            "runtime": self.cfg.run.runtime,
            "variant": s.variant, "cut": s.cut, "tail_cut": s.tail_cut, "cut_values_q": cm.cut_values,
            "model_bytes": cm.model_bytes, "agent_side_bytes": cm.agent_side_bytes,
            "ledger_bytes_per_epoch": per_epoch, "formula_bytes_per_epoch": cm.split_bytes(k),
            "ledger_equals_formula": all(b == cm.split_bytes(k) for b in per_epoch),
            "ledger_value_bytes": ledger.total_value_bytes(),
            "fedavg_formula_bytes_per_epoch": cm.fedavg_bytes(k), "crossover_agents": cm.crossover_agents()}
        if leakage is not None:
            summary["leakage"] = leakage
        ctx.report.add_section("Split learning", key_value_html({k: v for k, v in summary.items() if k != "leakage"}))
        if leakage is not None:
            ctx.report.add_table("Leakage (cut-layer activations)", [leakage])
        return MethodOutcome(history=records, ledger=ledger, model_state=state, summary=summary,
                             participant_rows=[{"participant": pid, "train_samples": len(a.train_data)}
                                               for pid, a in self.agents.items()])


def split_root(cfg: "ExperimentConfig", aggregator: Any, data: Any) -> "tuple[Any, Any]":
    """The centre's own agent on its clean root set (FLTrust) and the data the model is scored on
    (:func:`~cotrain.experiment.crosscutting.aggregation.root_split`); ``(None, held-out split)``
    for every rule that needs no server upload."""
    from cotrain.errors import ConfigError
    from cotrain.experiment.crosscutting.aggregation import root_split
    from cotrain.experiment.setup import build_global_model
    from cotrain.split import SplitAgent

    root_data, scored = root_split(cfg, aggregator, data)
    if root_data is None:
        return None, scored
    s = cfg.split
    if s.tail_cut is not None or s.variant == "sequential":
        raise ConfigError(f"aggregation.name: {cfg.aggregation.name!r} needs the centre's own upload, which it trains "
                          "through its head on the root set: not with a U-shaped split (the centre has no head) nor "
                          "sequential training (nothing is aggregated)", key="aggregation.name")
    return SplitAgent("server-root", model_factory=lambda: build_global_model(cfg, data), train_data=root_data,
                      seed=cfg.run.seed, cut=s.cut, tail_cut=None), scored


def split_leakage(cfg: "ExperimentConfig", data: Any, model: Any, recorder: Any, agents: dict[str, Any]) -> dict:
    """Attribute inference from the activations ``recorder`` holds; auxiliary data: the head of the
    test split; the truth read from ``agents``' sent indices (scoring only, it never travels)."""
    import torch

    from cotrain.audit.split_leakage import attribute_leakage, true_attribute
    from cotrain.split import split_model

    s = cfg.split
    pids = sorted(recorder.received)
    observed = torch.cat([recorder.stacked(pid) for pid in pids])
    truth = torch.cat([true_attribute(agents[pid], recorder, s.leakage_attribute) for pid in pids])
    test = data.splits.test
    aux = test.subset(range(min(s.leakage_samples, len(test))))
    a_aux = aux.y if s.leakage_attribute == "label" else aux.attributes[s.leakage_attribute]
    front = split_model(model, s.cut, s.tail_cut)[0]["front"]
    return attribute_leakage(front, aux.x, a_aux, observed, truth, attribute=s.leakage_attribute,
                             seed=cfg.run.seed).to_json()


def build_split_agent(cfg: "ExperimentConfig", index: int, data: Any, behaviours: Any) -> Any:
    """Agent ``index`` (its own partition only, the run's attack and defences applied): the one
    place split agents are built."""
    from cotrain.behaviours import behave
    from cotrain.experiment.setup import build_global_model, participant_id
    from cotrain.split import SplitAgent

    s, pid = cfg.split, participant_id(index)
    chosen, context = behaviours.for_participant(pid, seed=cfg.run.seed, num_participants=len(data.parts))
    return behave(lambda local: SplitAgent(pid, model_factory=lambda: build_global_model(cfg, data), train_data=local,
                                           seed=cfg.run.seed, cut=s.cut, tail_cut=s.tail_cut),
                  data.participant_data(index), chosen, context)
