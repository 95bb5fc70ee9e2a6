"""The ``split`` method: split learning / SplitFed (:mod:`cotrain.split`) as an experiment.

Wiring (two lines in the experiment layer): ``split: SplitSection = Field(default_factory=SplitSection)``
on ``ExperimentConfig``, and ``import cotrain.experiment.split_method`` where built-in methods are
imported. Runs in process; across processes use :func:`cotrain.split.launch.launch`.

The report gets a "Split learning" section: bytes per epoch read from the ledger beside the closed
form 2pq s_a + p s_y + 2K beta|W| and FedAvg's 2K|W| (see :mod:`cotrain.split.cost`), the
crossover K*, and, with ``leakage_samples > 0``, how well the centre infers ``leakage_attribute``
from the cut-layer activations it received in the last epoch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cotrain.experiment.methods import Method, MethodOutcome, RunContext, register_method

if TYPE_CHECKING:
    from cotrain.experiment.config import ExperimentConfig
    from cotrain.split.protocols import EpochRecord


class SplitSection(BaseModel):
    """``[split]``: variant, cut (block index or name), U-shaped tail cut, training and leakage settings."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)

    variant: Literal["sequential", "sflv1", "sflv2"] = "sequential"
    cut: int | str = 1
    tail_cut: int | str | None = None
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    leakage_samples: int = Field(0, ge=0, description="0: no leakage measurement")
    leakage_attribute: str = "label"


def epoch_json(record: "EpochRecord", participants: list[str]) -> dict[str, Any]:
    """An epoch record in the experiment's round format (round = epoch)."""
    return {"round": record.epoch, "test_accuracy": record.test_accuracy, "test_loss": record.test_loss,
            "seconds": record.seconds, "bytes_up": record.bytes_up, "bytes_down": record.bytes_down,
            "participants": list(participants), "participant_metrics": {},
            "train_loss": record.train_loss, "critical_path_seconds": record.critical_path_seconds}


@register_method("split")
class SplitLearning(Method):
    """Split learning between a computing centre and ``[data] participants`` agents."""

    def __init__(self, cfg: "ExperimentConfig") -> None:
        super().__init__(cfg)
        from cotrain.experiment.errors import ConfigError
        from cotrain.experiment.fedavg import _DATA_KEYS, _check_data_options, under_key
        from cotrain.experiment.setup import build_global_model, load_experiment_data, participant_id
        from cotrain.split import SplitAgent, SplitSettings, split_model

        s = cfg.split
        if cfg.run.runtime != "inprocess":
            raise ConfigError("run.runtime: the split method runs in process; across processes use "
                              "cotrain.split.launch (torch.distributed.rpc)", key="run.runtime")
        self.settings = under_key("split", lambda: SplitSettings(
            variant=s.variant, cut=s.cut, tail_cut=s.tail_cut, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr,
            momentum=s.momentum, weight_decay=s.weight_decay))
        under_key("data.options", lambda: _check_data_options(cfg))
        self.data = under_key("data", lambda: load_experiment_data(cfg), by_topic=_DATA_KEYS)
        self.model = under_key("model.options", lambda: build_global_model(cfg, self.data))
        under_key("split.cut", lambda: split_model(self.model, s.cut, s.tail_cut))
        train = self.data.splits.train
        if s.leakage_samples and s.leakage_attribute != "label" and s.leakage_attribute not in train.attributes:
            raise ConfigError(f"split.leakage_attribute: {cfg.data.dataset!r} has no attribute "
                              f"{s.leakage_attribute!r}; it has: label, {', '.join(sorted(train.attributes))}",
                              key="split.leakage_attribute")
        self.agents = {participant_id(i): SplitAgent(
            participant_id(i), model_factory=lambda: build_global_model(cfg, self.data),
            train_data=self.data.participant_data(i), seed=cfg.run.seed, cut=s.cut, tail_cut=s.tail_cut)
            for i in range(len(self.data.parts))}

    @property
    def total_rounds(self) -> int:
        return self.cfg.split.epochs

    def partition_view(self) -> Any:
        return self.data.splits.train, self.data.parts

    def run(self, ctx: RunContext) -> MethodOutcome:
        from cotrain.experiment.report import key_value_html
        from cotrain.federated import evaluate, model_state
        from cotrain.runtime import InProcessGrid
        from cotrain.split import communication_model, run_split
        from cotrain.split.leakage import ActivationRecorder

        s = self.cfg.split
        grid = InProcessGrid(self.agents)
        ids = grid.participant_ids()
        recorder = ActivationRecorder(epoch=s.epochs, limit=s.leakage_samples)
        history = run_split(grid, self.model, self.settings, seed=self.cfg.run.seed,
                            evaluate=lambda m: evaluate(m, self.data.splits.test),
                            on_epoch=lambda r: ctx.on_round(epoch_json(r, ids)),
                            observers=[recorder] if s.leakage_samples else None)
        train = self.data.splits.train
        cm = communication_model(self.model, train.input_shape, len(train), s.cut, s.tail_cut)
        k = len(ids)
        summary: dict[str, Any] = {
            "variant": s.variant, "cut": s.cut, "tail_cut": s.tail_cut, "cut_values_q": cm.cut_values,
            "model_bytes": cm.model_bytes, "agent_side_bytes": cm.agent_side_bytes,
            "ledger_bytes_per_epoch": [r.bytes for r in history], "formula_bytes_per_epoch": cm.split_bytes(k),
            "ledger_equals_formula": all(r.bytes == cm.split_bytes(k) for r in history),
            "fedavg_formula_bytes_per_epoch": cm.fedavg_bytes(k), "crossover_agents": cm.crossover_agents()}
        if s.leakage_samples:
            summary["leakage"] = self._leakage(recorder)
        ctx.report.add_section("Split learning", key_value_html(summary))
        return MethodOutcome(history=[epoch_json(r, ids) for r in history], ledger=grid.ledger,
                             model_state=model_state(self.model), summary=summary,
                             participant_rows=[{"participant": pid, "train_samples": len(a.train_data)}
                                               for pid, a in self.agents.items()])

    def _leakage(self, recorder: Any) -> dict[str, Any]:
        """Attribute inference from the received activations; auxiliary data: the head of the test split."""
        import torch

        from cotrain.split import split_model
        from cotrain.split.leakage import attribute_leakage, true_attribute

        s = self.cfg.split
        pids = sorted(recorder.received)
        observed = torch.cat([recorder.stacked(pid) for pid in pids])
        truth = torch.cat([true_attribute(self.agents[pid], recorder, s.leakage_attribute) for pid in pids])
        test = self.data.splits.test
        aux = test.subset(range(min(s.leakage_samples, len(test))))
        a_aux = aux.y if s.leakage_attribute == "label" else aux.attributes[s.leakage_attribute]
        front = split_model(self.model, s.cut, s.tail_cut)[0]["front"]
        return attribute_leakage(front, aux.x, a_aux, observed, truth, attribute=s.leakage_attribute,
                                 seed=self.cfg.run.seed).to_json()
