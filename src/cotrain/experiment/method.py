"""The method registry: ``[method] name`` picks a registered :class:`Method`.

A method has two phases, so that bad input loses nothing:

1. ``Method(cfg)`` prepares: loads and partitions data, builds models and participants. Anything
   wrong with the config or the data (unknown option, missing file) raises here, before a run
   folder is made or a single step is trained.
2. ``method.run(ctx)`` trains, reporting each finished round through ``ctx.on_round`` (which
   appends ``metrics.jsonl`` and moves the progress bar) and adding report sections through
   ``ctx.report``. It returns a :class:`MethodOutcome`; the runner writes the rest of the folder.

A method is one file in :mod:`cotrain.experiment.methods` (every module there is imported on
first use) registering itself with its own config section::

    @register_method("split", section=SplitSection)
    class SplitLearning(Method): ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, TypeVar

from cotrain.experiment.section import SECTIONS, Section
from cotrain.registry import Registry, import_all

if TYPE_CHECKING:
    import numpy as np
    import torch

    from cotrain.data.base import ArrayDataset
    from cotrain.experiment.checkpoint import RunCheckpoint
    from cotrain.experiment.config import ExperimentConfig
    from cotrain.experiment.report import Report
    from cotrain.federated.checkpoint import RoundHook
    from cotrain.runtime.ledger import Ledger

RoundJSON = dict[str, Any]


@dataclass
class RunContext:
    """What a running method may use of the run.

    Attributes:
        run_dir: the run folder (methods may write extra files there).
        report: the report page; ``report.add_section(title, html)`` adds a section.
        on_round: call with each finished round's record (``round``, ``test_accuracy``,
            ``test_loss``, ``seconds``, ``bytes_up``, ``bytes_down``, ``participants``,
            ``participant_metrics``); it is written to ``metrics.jsonl`` at once.
        checkpoint: the run's checkpoint (None: the run keeps none); give the round loop
            :meth:`round_hook`.
    """

    run_dir: Path
    report: "Report"
    on_round: Callable[[RoundJSON], None]
    checkpoint: "RunCheckpoint | None" = None

    def round_hook(self, *, ledger: "Ledger", participants: "dict[str, Any] | None" = None) -> "RoundHook":
        """The hook to pass to the round loop (``checkpoint=``): it checkpoints the loop's state, the
        in-process ``participants`` and the ``ledger`` after every round, and resumes them."""
        from cotrain.federated.checkpoint import NO_CHECKPOINT

        if self.checkpoint is None:
            return NO_CHECKPOINT
        return self.checkpoint.hook(ledger=ledger, participants=participants)


@dataclass
class MethodOutcome:
    """What a method hands back when it is done.

    Attributes:
        history: the round records, as given to ``on_round``.
        ledger: every message of the run.
        model_state: the final shared model's state dict, if there is one (saved as ``model.pt``).
        summary: extra keys for ``summary.json``.
        participant_rows: one row a participant for the report's per-participant table.
    """

    history: list[RoundJSON]
    ledger: "Ledger"
    model_state: "dict[str, torch.Tensor] | None" = None
    summary: dict[str, Any] = field(default_factory=dict)
    participant_rows: list[dict[str, Any]] = field(default_factory=list)


class Method(ABC):
    """A training protocol an experiment can run. ``__init__`` prepares (and validates)."""

    name: ClassVar[str] = ""
    uses: ClassVar[tuple[str, ...]] = ()
    round_word: ClassVar[str] = "round"
    """What one record of ``on_round`` is called in the report ("epoch" for split learning)."""
    """The cross-cutting sections this method reads (``[privacy]`` is read by the runner for every
    method); any other section set away from its defaults in a run of this method is an error."""

    def __init__(self, cfg: "ExperimentConfig") -> None:
        self.cfg = cfg

    @property
    @abstractmethod
    def total_rounds(self) -> int:
        """How many times ``on_round`` will be called (the progress bar's length)."""

    @property
    def dataset_name(self) -> str:
        """The data set's name, for the summary."""
        return self.cfg.data.dataset

    @property
    def num_participants(self) -> int:
        """How many participants take part, for the summary."""
        return self.cfg.data.participants

    @property
    def resumable(self) -> bool:
        """Whether this run checkpoints every round (its loop calls ``ctx.round_hook``) and can be
        resumed; False (the default): a stopped run starts again."""
        return False

    @property
    def test_samples(self) -> int | None:
        """How many held-out samples score the model each round (None: not scored)."""
        data = getattr(self, "data", None)
        return len(data.splits.test) if data is not None else None

    def partition_view(self) -> "tuple[ArrayDataset, list[np.ndarray]] | None":
        """The data set split across participants and each one's indices (for the partition
        plot), or None when the method has no such split."""
        return None

    @abstractmethod
    def run(self, ctx: RunContext) -> MethodOutcome:
        """Train, calling ``ctx.on_round`` after each round."""

    flower_job: ClassVar[str | None] = None
    """``"module:attribute"`` of the method's :class:`~cotrain.runtime.job.FlowerJob`, if it runs on Flower."""

    def run_on_flower(self, ctx: RunContext) -> "tuple[list[RoundJSON], Ledger, dict, dict[str, Any]]":
        """Run this method's Flower job on ``run.runtime``; each round is reported once it is back.
        Returns the round records, the ledger, the final model and the job's JSON artefacts."""
        from cotrain.experiment.flower import run_on_flower

        if self.flower_job is None:
            raise NotImplementedError(f"the {self.name} method has no Flower job")
        records, ledger, state, artifacts = run_on_flower(self.cfg, self.flower_job, ctx.run_dir / "flower")
        for r in records:
            ctx.on_round(r)
        return records, ledger, state, artifacts


def _load_builtin() -> None:
    import cotrain.experiment.methods as pkg

    import_all(pkg)


METHODS: Registry[type[Method]] = Registry("method", loader=_load_builtin)
M = TypeVar("M", bound=type[Method])


def register_method(name: str, *, section: "type[Section] | None" = None,
                    uses: tuple[str, ...] = ()) -> Callable[[M], M]:
    """Class decorator registering a :class:`Method` subclass under ``name``; ``section`` (a
    :class:`~cotrain.experiment.section.Section`) becomes the ``[name]`` table of the config;
    ``uses`` names the cross-cutting sections (``"aggregation"``, ``"attack"``, ...) it reads."""

    def add(cls: M) -> M:
        cls.name = name
        cls.uses = tuple(uses)
        METHODS.add(name, cls)
        if section is not None:
            SECTIONS.add(name, section)
        return cls

    return add


def available_methods() -> list[str]:
    """Registered method names, sorted."""
    return METHODS.names()


def get_method(name: str) -> type[Method]:
    """The class registered as ``name``; :class:`~cotrain.errors.UnknownNameError` listing the known names."""
    return METHODS.get(name)
