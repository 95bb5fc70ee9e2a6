"""Run an experiment end to end: prepare (validate), make the run folder, train, write the files.

:func:`run_experiment` is what ``cotrain run`` and ``cotrain demo`` call, and what tests use.
"""

from __future__ import annotations

import logging
import platform
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from cotrain.experiment.checkpoint import RunCheckpoint, RunInterrupted
from cotrain.experiment.clean_run import clean_summary, load_clean_run
from cotrain.experiment.config import ExperimentConfig, config_from_dict, save_config
from cotrain.experiment.method import Method, MethodOutcome, RunContext, get_method
from cotrain.data.plots import plot_partition
from cotrain.experiment.plots import plot_accuracy, plot_bytes, plot_scores
from cotrain.experiment.report import Report, Section, image_html, key_value_html, round_rows, table_html
from cotrain.experiment.records import DivergedError, divergence
from cotrain.experiment.rundir import RunFolder, atomic_write, create_run_dir
from cotrain.experiment.stopping import stop_after_round_on_signals
from cotrain.runtime.ledger import Ledger

log = logging.getLogger(__name__)

Progress = Callable[[int, int, "dict[str, Any] | None"], None]
"""``progress(rounds_done, rounds_total, record)``: called once with ``(0, total, None)`` when
training starts, then after each round with that round's record."""


@dataclass
class RunResult:
    """What a finished run produced.

    Attributes:
        run_dir: the run folder.
        summary: what ``summary.json`` holds.
        history: the round records, as in ``metrics.jsonl``.
        ledger: every message of the run.
        report: the report page; add sections and call :meth:`write_report` to rewrite it.
    """

    run_dir: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    ledger: Ledger
    report: Report

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.run_dir)

    def write_report(self) -> Path:
        """Write ``report.html`` again (after sections were added)."""
        return self.report.write(self.folder.report)


def prepare(cfg: ExperimentConfig) -> Method:
    """Validate ``cfg`` fully and build its method (data loaded, models built), training nothing.

    Raises ``ConfigError`` (one line naming the key) or ``DatasetNotFoundError`` (naming the path).
    """
    cfg = config_from_dict(cfg.model_dump())  # configs edited in code are checked again
    load_clean_run(cfg)  # a bad [attack] clean_run fails here, before anything trains
    return get_method(cfg.method.name)(cfg)


def run_experiment(cfg: ExperimentConfig, *, progress: Progress | None = None,
                   stop_after_round: int | None = None) -> RunResult:
    """Run the experiment ``cfg`` describes and write its run folder (see :mod:`.rundir`).

    Everything that can be wrong with the input fails first (:func:`prepare`), before the run
    folder is made. ``stop_after_round``: stop there as an interrupted run would (for tests; see
    :func:`run_prepared`).
    """
    t0 = time.perf_counter()
    return run_prepared(prepare(cfg), progress=progress, t0=t0, stop_after_round=stop_after_round)


def run_prepared(method: Method, *, progress: Progress | None = None, t0: float | None = None,
                 stop_after_round: int | None = None) -> RunResult:
    """Run a method :func:`prepare` built and write its run folder. ``t0`` (a ``perf_counter``
    reading) is when the run started, for ``summary["seconds"]``; default: now.

    A resumable method (``method.resumable``) checkpoints every round; SIGINT / SIGTERM then stop it
    after the current round (and so does ``stop_after_round``), raising :class:`RunInterrupted`,
    and :func:`cotrain.experiment.resume.resume_experiment` goes on from there.
    """
    t0 = time.perf_counter() if t0 is None else t0
    cfg = method.cfg
    folder = RunFolder(create_run_dir(cfg.run.output_dir, cfg.run.name))
    with folder.lock():
        save_config(cfg, folder.config, header=f"resolved config of run {folder.path.name} (cotrain {_version()})\n"
                                              "keys left out are unset (None)")
        folder.metrics.write_text("", encoding="utf-8")
        checkpoint = RunCheckpoint(folder, total_rounds=method.total_rounds, stop_after_round=stop_after_round)
        checkpoint.extra = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "resumed_after": []}
        return train(method, folder, checkpoint, progress=progress, t0=t0)


def train(method: Method, folder: RunFolder, checkpoint: RunCheckpoint, *, progress: Progress | None = None,
          t0: float) -> RunResult:
    """Train ``method`` into ``folder`` (held locked by the caller) from where ``checkpoint`` stands;
    write the run's files and mark it complete, or mark it interrupted / failed and raise."""
    cfg = method.cfg
    report = Report(title=f"cotrain run: {folder.path.name}",
                    subtitle=f"{cfg.method.name} · {method.dataset_name} · {cfg.model.name} · "
                             f"{method.num_participants} participants · seed {cfg.run.seed} · {cfg.run.runtime}")
    total = method.total_rounds

    def on_round(record: dict[str, Any]) -> None:
        problem = divergence(record)
        if problem is not None:
            kept = (f"the checkpoint of round {checkpoint.rounds_saved} is kept" if method.resumable
                    else "nothing is kept")
            raise DivergedError(f"round {record.get('round')}: training diverged ({problem}); likely cause: a learning "
                                f"rate too high for this model and data; lower it and run again ({kept})")
        folder.append_metrics(record)
        checkpoint.metrics_lines += 1
        if progress is not None:
            progress(checkpoint.metrics_lines, total, record)

    if progress is not None:
        progress(checkpoint.metrics_lines, total, None)
    _mark(folder, method, checkpoint, "running")
    threads = torch.get_num_threads()
    stopping = stop_after_round_on_signals(checkpoint) if method.resumable else nullcontext()
    try:
        with stopping:
            if cfg.run.threads is not None:
                torch.set_num_threads(cfg.run.threads)
            outcome = method.run(RunContext(run_dir=folder.path, report=report, on_round=on_round,
                                            checkpoint=checkpoint if method.resumable else None))
    except RunInterrupted as exc:
        _mark(folder, method, checkpoint, "interrupted", reason=exc.signal)
        log.info("%s", exc)
        raise
    except KeyboardInterrupt:
        _mark(folder, method, checkpoint, "interrupted", reason="KeyboardInterrupt")
        raise
    except Exception as exc:
        _mark(folder, method, checkpoint, "failed", error=f"{type(exc).__name__}: {exc}")
        if getattr(exc, "resumable", False) and folder.checkpoint.exists():  # a quorum failure: the cause may pass
            exc.args = (f"{exc}; the checkpoint of round {checkpoint.rounds_saved} is kept: once enough participants "
                        f"are back, resume with: cotrain run --resume {folder.path}",)
        raise
    finally:
        torch.set_num_threads(threads)
    seconds = checkpoint.seconds_before + time.perf_counter() - t0
    atomic_write(folder.ledger, outcome.ledger.write_jsonl)
    if outcome.model_state is not None and cfg.run.save_model:
        atomic_write(folder.model, lambda tmp: torch.save(outcome.model_state, tmp))
    summary = build_summary(cfg, method, outcome, seconds=seconds, started=checkpoint.extra["started"],
                            run_dir=folder.path)
    clean = load_clean_run(cfg)
    summary.update(clean_summary(clean, summary.get("final_test_accuracy")))
    summary["status"] = "complete"
    if checkpoint.extra["resumed_after"]:
        summary["resumed_after_rounds"] = list(checkpoint.extra["resumed_after"])
    report.sections[:0] = standard_sections(folder, method, outcome, summary,
                                            reference=clean.history if clean is not None else None)
    report.write(folder.report)
    folder.write_summary(summary)  # last: the folder is complete only once everything is written
    folder.checkpoint.unlink(missing_ok=True)
    return RunResult(run_dir=folder.path, summary=summary, history=outcome.history, ledger=outcome.ledger,
                     report=report)


def _mark(folder: RunFolder, method: Method, checkpoint: RunCheckpoint, status: str, **why: str) -> None:
    """``summary.json`` of a run that is not complete: where it stands and whether it can resume."""
    resumable = folder.checkpoint.exists()
    folder.write_summary({
        "name": folder.path.name, "run_dir": str(folder.path), "method": method.cfg.method.name, "status": status,
        "rounds_done": checkpoint.rounds_saved, "rounds_total": method.total_rounds, **why,
        "resumable": resumable, "started": checkpoint.extra.get("started"),
        **({"resume": f"cotrain run --resume {folder.path}"} if resumable and status != "running" else {})})


def build_summary(cfg: ExperimentConfig, method: Method, outcome: MethodOutcome, *, seconds: float,
                  started: str, run_dir: Path) -> dict[str, Any]:
    """``summary.json``: final scores, communication totals from the ledger, and what ran."""
    history, ledger = outcome.history, outcome.ledger
    last = history[-1] if history else {}
    accs = [r["test_accuracy"] for r in history if r.get("test_accuracy") is not None]
    by_payload = ledger.bytes_by_payload()
    n_params = (sum(t.numel() for t in outcome.model_state.values() if t.is_floating_point())
                if outcome.model_state else None)
    return {
        "name": run_dir.name, "run_dir": str(run_dir), "method": cfg.method.name, "runtime": cfg.run.runtime,
        "seed": cfg.run.seed, "dataset": method.dataset_name, "model": cfg.model.name,
        "model_parameters": n_params, "participants": method.num_participants, "rounds": len(history),
        "test_samples": method.test_samples,
        "rejected_uploads": sum(len(r.get("rejected", {})) for r in history),
        "failed_replies": sum(len(r.get("failed", {})) for r in history),
        "excluded_uploads": sum(len(r.get("aggregation", {}).get("excluded", [])) for r in history),
        "final_test_accuracy": last.get("test_accuracy"), "final_test_loss": last.get("test_loss"),
        "best_test_accuracy": max(accs) if accs else None,
        "bytes_up": ledger.total_bytes(direction="up"), "bytes_down": ledger.total_bytes(direction="down"),
        "bytes_total": ledger.total_bytes(), "bytes_by_payload": by_payload, "messages": len(ledger.entries),
        "privacy_releases": len(ledger.privacy), **privacy_summary(cfg, ledger), "seconds": round(seconds, 3), "started": started,
        "cotrain_version": _version(), "torch_version": torch.__version__, "python": platform.python_version(),
        **outcome.summary,
    }


def privacy_summary(cfg: ExperimentConfig, ledger: Ledger) -> dict[str, Any]:
    """Epsilon per releasing party from the ledger's spends, by the configured accountant (nothing
    when no noised release happened)."""
    if not ledger.privacy:
        return {}
    from cotrain.privacy import epsilon_by_party

    eps = epsilon_by_party(ledger, delta=cfg.privacy.delta, accountant=cfg.privacy.accountant)
    return {"epsilon_by_party": eps, "epsilon_max": max(eps.values()), "delta": cfg.privacy.delta,
            "accountant": cfg.privacy.accountant}


def standard_sections(folder: RunFolder, method: Method, outcome: MethodOutcome,
                      summary: dict[str, Any], *, reference: list[dict[str, Any]] | None = None) -> list[Section]:
    """Summary, plots, per-round and per-participant tables (written as PNGs into the folder too);
    ``reference``: the clean run's records, drawn beside the accuracy."""
    word = method.round_word
    shown = {(f"{word}s" if k == "rounds" else k): v for k, v in summary.items()
             if k not in ("run_dir", "bytes_by_payload", "epsilon_by_party", "leakage")}
    sections = [Section("Summary", key_value_html(shown)),
                Section("Hyperparameters", key_value_html(resolved_settings(method.cfg, method)))]
    if outcome.history:
        png = plot_accuracy(outcome.history, folder.plot("accuracy"), xlabel=word, reference=reference)
        sections.append(Section(f"Test accuracy per {word}", image_html(png, alt=f"accuracy per {word}")))
    by_round = outcome.ledger.bytes_by_round_and_payload()
    if by_round:
        png = plot_bytes(by_round, folder.plot("bytes"), title=f"Bytes exchanged per {word}", xlabel=word)
        sections.append(Section("Communication", image_html(
            png, alt=f"bytes per {word}", caption=f"Bytes on the ledger per {word}, by what the messages carry. "
                                                 "Totals: " + ", ".join(f"{k} {v:,} B" for k, v in
                                                                        summary["bytes_by_payload"].items()))))
    view = method.partition_view()
    if view is not None:
        png = plot_partition(view[0], view[1], folder.plot("partition"))
        sections.append(Section("Partition", image_html(
            png, alt="partition",
            caption=f"Training samples of each class held by each participant ({method.cfg.data.partition}).")))
    png = plot_scores(outcome.history, folder.plot("scores"), marked=summary.get("malicious", []))
    if png is not None:
        sections.append(Section("Aggregation", image_html(
            png, alt="scores per participant and round",
            caption=f"Rule {summary.get('aggregator', '?')}: each upload's score per round; "
                    f"{summary['excluded_uploads']} uploads excluded in all.")))
    sections.append(Section(f"Per {word}", table_html(round_rows(outcome.history, word=word))))
    if outcome.participant_rows:
        eps = summary.get("epsilon_by_party", {})
        rows = [{**r, **({"epsilon": eps.get(r.get("participant"), "no claim")} if eps else {})}
                for r in outcome.participant_rows]
        sections.append(Section("Per participant", table_html(rows)))
    if summary.get("epsilon_by_party"):
        sections.append(Section("Privacy", key_value_html({
            f"epsilon of {p}": round(e, 4) for p, e in sorted(summary["epsilon_by_party"].items())} | {
            "delta": summary["delta"], "accountant": summary["accountant"],
            "releases on the ledger": summary["privacy_releases"]})))
    return sections


def resolved_settings(cfg: ExperimentConfig, method: Method) -> dict[str, Any]:
    """Every setting the run used, defaults filled in, as flat ``section.key`` pairs: the core sections,
    the method's own and the cross-cutting ones it reads (a reader of the report sees what ran)."""
    from cotrain.experiment.config import config_to_dict

    applies = ("run", "data", "model", "method", method.name, *method.uses, "privacy")
    data = config_to_dict(cfg)
    flat: dict[str, Any] = {}
    for name in applies:
        for key, value in (data.get(name) or {}).items():
            if isinstance(value, dict):
                flat[f"{name}.{key}"] = ", ".join(f"{k} = {v}" for k, v in value.items()) or "–"
            else:
                flat[f"{name}.{key}"] = value
    return flat


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cotrain")
    except PackageNotFoundError:
        return "unknown"
