"""The ``cotrain`` command through typer's CliRunner: run, validate, demo, datasets, and input errors."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cotrain.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()

TINY = """
[run]
name = "cli"
seed = 3

[data]
participants = 3
options = { n_train = 90, n_test = 40, num_domains = 1 }

[model]
options = { width = 4 }

[fedavg]
rounds = 2
local_steps = 2
batch_size = 8
"""


def write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_run_writes_a_run_folder_and_prints_the_result(tmp_path: Path):
    out = tmp_path / "runs"
    result = runner.invoke(app, ["run", str(write(tmp_path, TINY)), "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert "final test accuracy" in result.output and f"run folder: {out / 'cli'}" in result.output
    summary = json.loads((out / "cli" / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["seed"] == 3


def test_run_overrides_name_seed_and_any_key(tmp_path: Path):
    out = tmp_path / "runs"
    result = runner.invoke(app, ["run", str(write(tmp_path, TINY)), "-o", str(out), "--name", "other", "--seed", "9",
                                 "--set", "fedavg.rounds=1", "--set", "data.options.n_test=30", "--quiet"])
    assert result.exit_code == 0, result.output
    resolved = tomllib.loads((out / "other" / "config.toml").read_text())
    assert resolved["run"]["seed"] == 9 and resolved["fedavg"]["rounds"] == 1
    assert resolved["data"]["options"]["n_test"] == 30 and resolved["run"]["output_dir"] == str(out)


@pytest.mark.parametrize("text, key", [
    (TINY.replace("rounds = 2", "rounds = 0"), "fedavg.rounds"),
    (TINY.replace("rounds = 2", "roundz = 2"), "fedavg.roundz"),
    (TINY.replace("rounds = 2", 'rounds = "2"'), "fedavg.rounds"),
    (TINY + '\n[method]\nname = "nope"\n', "method.name"),
    (TINY.replace("width = 4", "widht = 4"), "model.options"),
    (TINY + '\n[method]\nname = "split"\n', "fedavg"),  # another method's settings would be ignored
    ('[method]\nname = "ecos"\n[attack]\nname = "sign_flip"\n', "attack"),  # ECOS has no participants' uploads
])
def test_config_errors_are_one_red_line_and_exit_code_2(tmp_path: Path, text: str, key: str):
    result = runner.invoke(app, ["run", str(write(tmp_path, text)), "-o", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}: "), result.output
    assert not (tmp_path / "runs").exists()


def test_syntax_error_names_the_line(tmp_path: Path):
    result = runner.invoke(app, ["run", str(write(tmp_path, "[run]\nseed = = 1\n"))])
    assert result.exit_code == 2 and "line 2" in result.output and "Traceback" not in result.output


def test_missing_data_names_the_path_and_how_to_get_it(tmp_path: Path):
    text = TINY.replace("options = { n_train = 90, n_test = 40, num_domains = 1 }",
                        f'dataset = "mnist"\ndata_dir = "{tmp_path / "nodata"}"')
    result = runner.invoke(app, ["run", str(write(tmp_path, text)), "-o", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    flat = result.output.replace("\n", "")
    assert str(tmp_path / "nodata") in flat and "COTRAIN_DATA" in flat and "Traceback" not in flat


def test_bad_override_is_an_input_error(tmp_path: Path):
    result = runner.invoke(app, ["run", str(write(tmp_path, TINY)), "--set", "fedavg.lr=-1"])
    assert result.exit_code == 2 and "fedavg.lr" in result.output


def test_validate_checks_without_training(tmp_path: Path):
    result = runner.invoke(app, ["validate", str(write(tmp_path, TINY)), "--show"])
    assert result.exit_code == 0 and "ok" in result.output and "[fedavg]" in result.output
    result = runner.invoke(app, ["validate", str(write(tmp_path, "[data]\nparticipants = 0\n"))])
    assert result.exit_code == 2 and "data.participants" in result.output


def test_demo_quick_runs(tmp_path: Path):
    result = runner.invoke(app, ["demo", "--quick", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "demo" / "report.html").exists() and "final test accuracy" in result.output


@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="../shared/data/mnist is not present")
def test_datasets_lists_mnist_found(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(REPO)  # the default data directory is ../shared/data from the working directory
    monkeypatch.delenv("COTRAIN_DATA", raising=False)
    result = runner.invoke(app, ["datasets"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert str(SHARED_DATA) in result.output
    row = next(line for line in result.output.splitlines() if " mnist " in line)
    assert "yes" in row and "60,000" in row and "10,000" in row


def test_datasets_says_where_missing_data_would_be(tmp_path: Path):
    result = runner.invoke(app, ["datasets", "--data-dir", str(tmp_path)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if " mnist " in line)
    assert "no" in row and str(tmp_path) in row
    assert "synthetic" in result.output
    for reader in ("npz", "wav"):  # path-only readers are not "found": they need a path
        row = next(line for line in result.output.splitlines() if f" {reader} " in line)
        assert "needs path=" in row and "yes" not in row


def test_list_shows_every_registry():
    from typer.testing import CliRunner

    from cotrain.aggregation import AGGREGATORS
    from cotrain.cli import app

    out = CliRunner().invoke(app, ["list"], env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    for name in ("fedavg", "split", "fada", *AGGREGATORS.names(), "sign_flip", "dp_client", "privacy"):
        assert name in out.output, name


def test_help_keeps_the_section_names():
    from typer.testing import CliRunner

    from cotrain.cli import app

    out = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert "overrides run.seed" in out.output and "overrides run.output_dir" in out.output
