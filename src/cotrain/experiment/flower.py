"""Experiments on Flower: a method's :class:`~cotrain.runtime.job.FlowerJob` over its config.

The job description is the experiment config as JSON; every Flower process decodes it and
builds its part with the same functions the in-process run uses, so both give the same numbers.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from cotrain.runtime.job import FlowerJob, ServerResult

if TYPE_CHECKING:
    from cotrain.experiment.config import ExperimentConfig
    from cotrain.runtime.grid import Grid, Participant
    from cotrain.runtime.ledger import Ledger


@lru_cache(maxsize=8)
def decode(description: str) -> "ExperimentConfig":
    from cotrain.experiment.config import ExperimentConfig

    return ExperimentConfig.model_validate_json(description)


def config_job(*, serve: "Callable[[Grid, ExperimentConfig], ServerResult]",
               build_participant: "Callable[[ExperimentConfig, int], Participant]",
               num_participants: "Callable[[ExperimentConfig], int]",
               participant_id: "Callable[[ExperimentConfig, int], str]") -> FlowerJob:
    """A :class:`FlowerJob` whose description is an experiment config as JSON."""
    return FlowerJob(serve=lambda grid, d: serve(grid, decode(d)),
                     build_participant=lambda d, i: build_participant(decode(d), i),
                     num_participants=lambda d: num_participants(decode(d)),
                     participant_id=lambda d, i: participant_id(decode(d), i))


def run_on_flower(cfg: "ExperimentConfig", job_ref: str,
                  workdir: Path) -> tuple[list[dict[str, Any]], "Ledger", dict, dict[str, Any]]:
    """Run ``cfg`` with the job ``job_ref`` on ``cfg.run.runtime`` (simulation or deployment);
    returns the round records, the ledger, the final model and the job's JSON artefacts."""
    import json

    from cotrain.runtime.flower.apps import ARTIFACTS_FILE

    from cotrain.runtime.flower.launch import run_flower_deployment, run_flower_simulation
    from cotrain.runtime.job import load_job

    workdir.mkdir(parents=True, exist_ok=True)
    description = cfg.model_dump_json()
    n = load_job(job_ref).num_participants(description)
    launch = run_flower_simulation if cfg.run.runtime == "flower-simulation" else run_flower_deployment
    history, ledger, state = launch(description, job=job_ref, num_participants=n, workdir=workdir,
                                    timeout_s=cfg.run.timeout_s)
    artifacts = workdir / "results" / ARTIFACTS_FILE
    extra = json.loads(artifacts.read_text(encoding="utf-8")) if artifacts.exists() else {}
    return list(history), ledger, dict(state), extra
