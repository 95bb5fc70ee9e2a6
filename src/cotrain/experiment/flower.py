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
    from cotrain.runtime.flower.security import Security
    from cotrain.runtime.ledger import Ledger


@lru_cache(maxsize=8)
def decode(description: str) -> "ExperimentConfig":
    from cotrain.experiment.config import ExperimentConfig

    return ExperimentConfig.model_validate_json(description)


def config_job(*, serve: "Callable[[Grid, ExperimentConfig], ServerResult]",
               build_participant: "Callable[[ExperimentConfig, int], Participant]",
               num_participants: "Callable[[ExperimentConfig], int]",
               participant_id: "Callable[[ExperimentConfig, int], str]",
               exchanges: "Callable[[ExperimentConfig], int]") -> FlowerJob:
    """A :class:`FlowerJob` whose description is an experiment config as JSON."""
    return FlowerJob(serve=lambda grid, d: serve(grid, decode(d)),
                     build_participant=lambda d, i: build_participant(decode(d), i),
                     num_participants=lambda d: num_participants(decode(d)),
                     participant_id=lambda d, i: participant_id(decode(d), i),
                     exchanges=lambda d: exchanges(decode(d)))


def flower_security(cfg: "ExperimentConfig", nodes: int | None = None) -> "Security":
    """``[run] tls`` and ``node_keys`` as the launcher takes them; a one-line :class:`ConfigError`
    naming the key for a missing file (or, ``nodes`` given, a key count other than the node count)."""
    from cotrain.errors import ConfigError
    from cotrain.runtime.flower.security import Security, SecurityFileError, TlsFiles

    tls = cfg.run.tls
    security = Security(
        tls=None if tls is None else TlsFiles(*(Path(f).expanduser().resolve() for f in
                                               (tls.ca_certfile, tls.certfile, tls.keyfile))),
        node_keys=tuple(Path(k).expanduser().resolve() for k in cfg.run.node_keys or ()))
    try:
        security.check(nodes)
    except SecurityFileError as err:
        raise ConfigError(f"run.{err.field}: {err}", key=f"run.{err.field}") from None
    return security


def write_flower_app(cfg: "ExperimentConfig", app_dir: Path, results_dir: Path) -> Path:
    """The Flower app of ``cfg``'s method, for a SuperLink run by hand (``flwr run APP_DIR``; see
    docs/deployment.md): the config travels in its run config, the ServerApp writes its results
    to ``results_dir`` on the SuperLink's machine."""
    from cotrain.errors import ConfigError
    from cotrain.experiment.method import METHODS
    from cotrain.experiment.prepare import require_flower
    from cotrain.runtime.flower.launch import Limits, write_app
    from cotrain.runtime.job import load_job

    require_flower("flower-deployment")
    job_ref = METHODS.get(cfg.method.name).flower_job
    if job_ref is None:
        raise ConfigError(f"method.name: the {cfg.method.name} method has no Flower job", key="method.name")
    description = cfg.model_dump_json()
    job = load_job(job_ref)
    n = job.num_participants(description)
    lim = Limits(timeout_s=cfg.run.timeout_s, reply_timeout_s=cfg.run.reply_timeout_s,
                 node_wait_s=cfg.run.node_wait_s).resolved(
        exchanges=job.exchanges(description) if job.exchanges else 1, participants=n, simulation=False)
    return write_app(Path(app_dir), description, results_dir=Path(results_dir), job=job_ref,
                     node_wait_s=float(lim.node_wait_s), reply_timeout_s=float(lim.reply_timeout_s))


def run_on_flower(cfg: "ExperimentConfig", job_ref: str,
                  workdir: Path) -> tuple[list[dict[str, Any]], "Ledger", dict, dict[str, Any]]:
    """Run ``cfg`` with the job ``job_ref`` on ``cfg.run.runtime`` (simulation or deployment);
    returns the round records, the ledger, the final model and the job's JSON artefacts.
    A time limit that passes is a one-line :class:`RunFailedError` naming its ``[run]`` key."""
    import json

    from cotrain.errors import RunFailedError
    from cotrain.runtime.flower.apps import ARTIFACTS_FILE
    from cotrain.runtime.flower.launch import (FlowerLaunchError, FlowerTimeoutError, Limits,
                                               run_flower_deployment, run_flower_simulation)
    from cotrain.runtime.job import load_job

    workdir.mkdir(parents=True, exist_ok=True)
    description = cfg.model_dump_json()
    n = load_job(job_ref).num_participants(description)
    limits = Limits(timeout_s=cfg.run.timeout_s, reply_timeout_s=cfg.run.reply_timeout_s,
                    node_wait_s=cfg.run.node_wait_s)
    try:
        if cfg.run.runtime == "flower-simulation":
            history, ledger, state = run_flower_simulation(description, job=job_ref, num_participants=n,
                                                           workdir=workdir, limits=limits)
        else:
            history, ledger, state = run_flower_deployment(
                description, job=job_ref, num_participants=n, workdir=workdir, limits=limits,
                security=flower_security(cfg, n), node_cache=cfg.run.node_cache)
    except FlowerLaunchError as err:  # name the limits by their [run] keys
        text = str(err)
        for limit in ("timeout_s", "reply_timeout_s", "node_wait_s"):
            text = text.replace(f"({limit})", f"(run.{limit})")
        hint = f"; raise run.{err.limit} to allow more" if isinstance(err, FlowerTimeoutError) else ""
        raise RunFailedError(text + hint) from None
    artifacts = workdir / "results" / ARTIFACTS_FILE
    extra = json.loads(artifacts.read_text(encoding="utf-8")) if artifacts.exists() else {}
    return list(history), ledger, dict(state), extra
