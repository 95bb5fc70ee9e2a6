"""The ``cotrain`` command: ``demo``, ``run CONFIG.toml``, ``validate CONFIG.toml``, ``datasets``,
``flower-app CONFIG.toml APP_DIR`` (a Flower app for a deployment run by hand).

Input errors (a wrong config key, type or value, a TOML syntax error, a missing data file) are one
red line and exit code 2, never a traceback.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Deep learning across data owners whose raw data never leaves them; every byte on a ledger.")
console = Console()
err_console = Console(stderr=True)

QUICK_ENV = "COTRAIN_DEMO_QUICK"


@contextmanager
def input_errors() -> Iterator[None]:
    """Turn cotrain's own errors into one red line: exit code 1 for a run that failed (a Flower
    launch: its message names the log folder), 2 for bad input. Anything else is a bug and keeps
    its traceback."""
    from cotrain.errors import CotrainError, RunFailedError

    try:
        yield
    except CotrainError as exc:
        err_console.print(f"error: {exc}", style="bold red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=1 if isinstance(exc, RunFailedError) else 2) from None


def _human_bytes(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "–" if value is None else str(value)


def result_table(summary: dict[str, Any]) -> Table:
    """The table shown when a run ends."""
    table = Table(title="Result", show_header=False, title_style="bold")
    table.add_column("", style="cyan")
    table.add_column("", overflow="fold")
    rows = [("final test accuracy", _fmt(summary.get("final_test_accuracy"))),
            ("final test loss", _fmt(summary.get("final_test_loss"))),
            ("method", f"{summary.get('method')} ({summary.get('runtime')})"),
            ("data", f"{summary.get('dataset')}, {summary.get('participants')} participants"),
            ("model", f"{summary.get('model')} ({summary.get('model_parameters') or '?'} parameters)"),
            ("epochs" if summary.get("method") == "split" else "rounds", _fmt(summary.get("rounds"))),
            ("bytes up / down", f"{_human_bytes(summary.get('bytes_up'))} / {_human_bytes(summary.get('bytes_down'))}"),
            ("messages", _fmt(summary.get("messages"))),
            ("seed", _fmt(summary.get("seed"))),
            ("seconds", f"{summary.get('seconds', 0):.1f}")]
    for k, v in rows:
        table.add_row(k, v)
    for k, v in summary.items():  # what a method or a hook added (e.g. the audit's success rate)
        if k not in _STANDARD_KEYS and isinstance(v, (int, float, str, bool)):
            table.add_row(k.replace("_", " "), _fmt(v))
    return table


_STANDARD_KEYS = {"status", "resumed_after_rounds", "name", "run_dir", "method", "runtime", "seed", "dataset", "model", "model_parameters",
                  "participants", "rounds", "final_test_accuracy", "final_test_loss", "best_test_accuracy",
                  "bytes_up", "bytes_down", "bytes_total", "bytes_by_payload", "messages", "privacy_releases",
                  "seconds", "started", "cotrain_version", "torch_version", "python"}


def _run_with_progress(cfg: Any, *, quiet: bool = False, resume: Optional[Path] = None) -> dict[str, Any]:
    """Prepare (a transient spinner; input errors surface here), then train under a progress bar
    (in a new run folder, or in ``resume``'s from its checkpoint)."""
    import time

    from cotrain.experiment import prepare, resume_prepared, run_prepared

    t0 = time.perf_counter()

    def go(method: Any, progress: Any = None) -> Any:
        if resume is not None:
            return resume_prepared(method, resume, progress=progress, t0=t0)
        return run_prepared(method, progress=progress, t0=t0)

    if quiet:
        return go(prepare(cfg)).summary
    with console.status(f"preparing {cfg.data.dataset} data and {cfg.model.name} ..."):
        method = prepare(cfg)
    columns = (TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn(f"{method.round_word}s"), TimeElapsedColumn(), TextColumn("{task.fields[status]}"))
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(f"{cfg.method.name} · {method.dataset_name}", total=method.total_rounds, status="")

        def update(done: int, total: int, record: dict[str, Any] | None) -> None:
            status = ""
            if record is not None and record.get("test_accuracy") is not None:
                status = f"test acc {record['test_accuracy']:.3f}"
            bar.update(task, completed=done, total=total, status=status)

        result = go(method, update)
    return result.summary


def _apply_cli_overrides(cfg: Any, *, output_dir: Optional[Path], name: Optional[str], seed: Optional[int],
                         sets: Optional[list[str]]) -> Any:
    from cotrain.experiment import parse_override, with_overrides

    overrides: dict[str, Any] = dict(parse_override(s) for s in sets or [])
    if output_dir is not None:
        overrides["run.output_dir"] = str(output_dir)
    if name is not None:
        overrides["run.name"] = name
    if seed is not None:
        overrides["run.seed"] = seed
    return with_overrides(cfg, overrides) if overrides else cfg


OutputDir = typer.Option(None, "--output-dir", "-o", help="Parent folder of the run folder (overrides run.output_dir).")
Seed = typer.Option(None, "--seed", "-s", help="Root seed (overrides run.seed).")
Quiet = typer.Option(False, "--quiet", "-q", help="No progress bar.")


@contextmanager
def interruptions() -> Iterator[None]:
    """A run stopped by SIGINT / SIGTERM after a round: one line on how to resume; exit 130 / 143."""
    from cotrain.experiment import RunInterrupted

    try:
        yield
    except RunInterrupted as exc:
        err_console.print(str(exc), style="yellow", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=143 if exc.signal == "SIGTERM" else 130) from None


@app.command()
def run(
    config: Optional[Path] = typer.Argument(None, help="Experiment file (TOML); see examples/."),
    output_dir: Optional[Path] = OutputDir,
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Run folder name (overrides run.name)."),
    seed: Optional[int] = Seed,
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override any key: --set fedavg.rounds=1 (repeatable)."),
    quiet: bool = Quiet,
    resume: Optional[Path] = typer.Option(None, "--resume", help="Go on with a stopped run from its last "
                                          "checkpoint, in its folder, with its saved config."),
) -> None:
    """Run the experiment described in CONFIG and write its run folder (or resume a stopped run)."""
    from cotrain.errors import ConfigError
    from cotrain.experiment import load_config, resume_config

    with input_errors(), interruptions():
        if resume is not None:
            if config is not None or output_dir or name or seed is not None or set_:
                raise ConfigError("resume: --resume takes the run folder alone (its saved config is used)",
                                  key="resume")
            summary = _run_with_progress(resume_config(resume), quiet=quiet, resume=resume)
        else:
            if config is None:
                raise ConfigError("run: give an experiment file (CONFIG) or --resume RUN_DIR", key="config")
            cfg = _apply_cli_overrides(load_config(config), output_dir=output_dir, name=name, seed=seed, sets=set_)
            summary = _run_with_progress(cfg, quiet=quiet)
    show_result(summary)


@app.command()
def audit(
    run_dir: Path = typer.Argument(..., help="A saved FedSGD run folder (holds config.toml)."),
    rounds: Optional[list[int]] = typer.Option(None, "--round", help="Round to audit (repeatable; default: audit.rounds)."),
    attribute: Optional[str] = typer.Option(None, "--attribute", help="Private attribute to infer."),
    quiet: bool = Quiet,
) -> None:
    """Gradient audit of a saved run: replay it (same seed, same uploads) with a curious server."""
    from cotrain.experiment.crosscutting.audit import audit_config_for

    with input_errors():
        cfg = audit_config_for(run_dir, rounds=rounds, attribute=attribute)
        summary = _run_with_progress(cfg, quiet=quiet)
    show_result(summary)


def show_result(summary: dict[str, Any]) -> None:
    """The result table, then where the run folder and its report are (never cut short)."""
    console.print(result_table(summary))
    folder = Path(str(summary.get("run_dir")))
    console.print(f"run folder: {folder}", soft_wrap=True, highlight=False, markup=False)
    console.print(f"report: {folder / 'report.html'}", soft_wrap=True, highlight=False, markup=False)


@app.command()
def demo(
    output_dir: Optional[Path] = OutputDir,
    seed: Optional[int] = Seed,
    quick: bool = typer.Option(False, "--quick", hidden=True, help="A few seconds' version, for smoke tests."),
    quiet: bool = Quiet,
) -> None:
    """FedAvg of a small CNN across 10 participants on generated data (well under a minute on 2 CPU cores)."""
    from cotrain.experiment import demo_config

    with input_errors():
        cfg = demo_config(quick=quick or os.environ.get(QUICK_ENV) == "1")
        cfg = _apply_cli_overrides(cfg, output_dir=output_dir, name=None, seed=seed, sets=None)
        console.print(f"[bold]cotrain demo[/]: FedAvg of {cfg.model.name} across {cfg.data.participants} participants "
                      f"on generated data, {cfg.fedavg.rounds} rounds; raw data never leaves a participant.")
        summary = _run_with_progress(cfg, quiet=quiet)
    show_result(summary)


@app.command()
def validate(
    config: Path = typer.Argument(..., help="Experiment file (TOML)."),
    show: bool = typer.Option(False, "--show", help="Print the resolved config (all defaults filled in)."),
) -> None:
    """Check CONFIG (keys, types, values, names, data options) without training."""
    from cotrain.experiment import config_to_toml, load_config, prepare

    with input_errors():
        cfg = load_config(config)
        prepare(cfg)
    if show:
        console.print(config_to_toml(cfg), markup=False, highlight=False)
    console.print(f"[green]ok[/]: {config} is a valid {cfg.method.name} experiment")


@app.command("flower-app")
def flower_app(
    config: Path = typer.Argument(..., help="Experiment file (TOML)."),
    app_dir: Path = typer.Argument(..., help="Folder to write the Flower app to."),
    results_dir: Path = typer.Option(Path("flower-results"), "--results-dir",
                                     help="Where the ServerApp writes history.json, ledger.jsonl, model.pt."),
) -> None:
    """Write CONFIG's Flower app for a SuperLink you run yourself (docs/deployment.md)."""
    from cotrain.experiment import load_config, prepare
    from cotrain.experiment.flower import write_flower_app

    with input_errors():
        cfg = load_config(config)
        prepare(cfg)
        path = write_flower_app(cfg, app_dir, results_dir.resolve())
    console.print(f"wrote {path}; submit it with: flwr run {path} <connection>", markup=False, highlight=False)


@app.command("list")
def list_plugins() -> None:
    """Every registered method, aggregation rule, attack, defence, model, partitioner and config section."""
    from cotrain.aggregation import AGGREGATORS
    from cotrain.behaviours import ATTACKS, DEFENCES
    from cotrain.data.partition import PARTITIONERS
    from cotrain.experiment.config import ExperimentConfig
    from cotrain.experiment.method import METHODS
    from cotrain.models.registry import MODELS
    from cotrain.privacy import ACCOUNTANTS

    table = Table(title="Registered extensions (docs/extending.md adds one)")
    table.add_column("kind", style="cyan")
    table.add_column("names", overflow="fold")
    for kind, names in (("method", METHODS.names()), ("aggregation rule", AGGREGATORS.names()),
                        ("attack", ATTACKS.names()), ("defence", DEFENCES.names()), ("model", MODELS.names()),
                        ("partitioner", PARTITIONERS.names()), ("accountant", ACCOUNTANTS.names()),
                        ("config section", list(ExperimentConfig.model_fields))):
        table.add_row(kind, ", ".join(names))
    console.print(table)


@app.command()
def datasets(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data directory (default: $COTRAIN_DATA, "
                                                                      "../shared/data, ~/.cotrain/data)."),
) -> None:
    """Which data sets are found, where, and their sizes."""
    from cotrain.data import available_datasets, resolve_data_dir

    infos = available_datasets(data_dir)
    table = Table(title=f"Data sets (data directory: {resolve_data_dir(data_dir)})")
    for col, kw in (("name", {"style": "cyan"}), ("found", {}), ("train", {"justify": "right"}),
                    ("test", {"justify": "right"}), ("path / how to get", {"overflow": "fold"}),
                    ("description", {})):
        table.add_column(col, **kw)
    for info in infos:
        where = str(info.path) if info.path is not None else ""
        if not info.found or not where:
            where = f"{where} ({info.how_to_get})" if where else info.how_to_get
        by_path = info.path is None and "path=" in info.how_to_get  # read from a path option: nothing to find
        found = "[yellow]needs path=[/]" if by_path else "[green]yes[/]" if info.found else "[red]no[/]"
        table.add_row(info.name, found,
                      f"{info.n_train:,}" if info.n_train is not None else "–",
                      f"{info.n_test:,}" if info.n_test is not None else "–", where, info.description)
    console.print(table)


def main() -> None:  # pragma: no cover
    """Entry point for ``python -m cotrain.cli``."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
