"""Property tests: no config file and no command line a user can type gets a traceback.

Hypothesis writes experiment files (known and unknown sections and keys; huge, negative, infinite
and wrongly typed values; options tables; binary and empty files) and command lines, and runs
them through the real ``cotrain`` command. Every outcome must be one of: accepted (exit 0), one
line ``error: ...`` naming what is wrong (exit 2), or, for a malformed command line, the command
parser's usage message (exit 2). Never a traceback, never exit 1 from input alone.

Numbers are drawn from the edges (0, 1, -1, 10**30, 2**63, 1e300, inf, nan) and a few small ones,
not the middle: a valid mid-sized value (n_train = 400,000) would make ``validate`` build real
data, which is slow, not wrong.
"""

from __future__ import annotations

import math
from pathlib import Path

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cotrain.cli import app
from cotrain.experiment.config import ExperimentConfig
from cotrain.experiment.section import SECTIONS

runner = CliRunner()
WIDE = {"COLUMNS": "5000"}  # one logical line must not be wrapped into several by the terminal width
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

EDGE_INTS = st.sampled_from([0, 1, 2, 3, -1, -(10 ** 30), 10 ** 30, 2 ** 63, 2 ** 31])
EDGE_FLOATS = st.sampled_from([0.0, 0.5, 1.0, -1.0, 1e-300, 1e300, -1e300, math.inf, -math.inf, math.nan])
WORDS = st.sampled_from(["", "fedavg", "split", "fada", "ecos", "median", "mnist", "synthetic", "small_cnn",
                         "sign_flip", "gradient", "flower-deployment", "../..", "x" * 300, "ü\u202e"])
SCALARS = st.one_of(EDGE_INTS, EDGE_FLOATS, st.booleans(), WORDS)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3),
                   st.dictionaries(st.sampled_from(["width", "n_train", "n_test", "beta", "norm", "zzz"]),
                                   SCALARS, max_size=3))


def _field_names(section: str) -> list[str]:
    return list(SECTIONS.get(section).model_fields)


SECTION_NAMES = list(ExperimentConfig.model_fields)


@st.composite
def experiment_files(draw: st.DrawFn) -> dict:
    """A TOML document of 0..4 tables, mostly known sections with known keys (a typo now and then)."""
    doc: dict = {}
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(SECTION_NAMES + ["nonsense"]))  # an unknown table now and then
        keys = _field_names(name) if name in SECTION_NAMES else ["a"]
        table = doc.setdefault(name, {})
        for _ in range(draw(st.integers(0, 3))):
            key = draw(st.sampled_from(keys + ["typo_key"]))
            table[key] = draw(VALUES)
    return doc


def assert_no_traceback(result, *, allow_usage: bool = False) -> None:
    out = result.output
    assert "Traceback" not in out, out
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code == 0:
        return
    assert result.exit_code == 2, (result.exit_code, out)
    lines = [line for line in out.splitlines() if line.strip()]
    if allow_usage and lines and lines[0].startswith("Usage:"):
        assert "Error" in out  # the command parser's own message: usage, how to get help, what was wrong
        return
    assert len(lines) == 1 and lines[0].startswith("error: "), out


@FUZZ
@given(doc=experiment_files())
def test_any_experiment_file_is_accepted_or_one_line_error(tmp_path: Path, doc: dict):
    # Prepare
    path = tmp_path / "exp.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    # Execute
    result = runner.invoke(app, ["validate", str(path)], env=WIDE)
    # Assert
    assert_no_traceback(result)


@FUZZ
@given(blob=st.binary(max_size=200))
def test_binary_and_empty_files_are_one_line_errors(tmp_path: Path, blob: bytes):
    path = tmp_path / "exp.toml"
    path.write_bytes(blob)
    result = runner.invoke(app, ["validate", str(path)], env=WIDE)
    assert_no_traceback(result)
    if blob.strip() == b"":  # an empty file is the default experiment, which is valid
        assert result.exit_code == 0, result.output


TOKENS = st.sampled_from(["run", "validate", "audit", "datasets", "list", "--set", "-o", "--seed", "-s", "--name",
                          "--resume", "--round", "--attribute", "--data-dir", "--show", "--quiet", "--bogus",
                          "fedavg.rounds=0", "fedavg.rounds", "=", "data.options.width=x", "a.b.c=1", "-1", "abc",
                          "1e999", "18446744073709551617", "missing.toml", ".", "/", ""])


@FUZZ
@given(argv=st.lists(TOKENS, min_size=1, max_size=5))
def test_any_command_line_is_accepted_or_an_input_error(tmp_path: Path, argv: list[str]):
    # A command line that would really train (run with a valid file) cannot be drawn: no token is an
    # experiment file that exists, and "." or "/" are folders. `datasets` and `list` only print.
    result = runner.invoke(app, argv, env={**WIDE, "COTRAIN_DATA": str(tmp_path)})
    assert_no_traceback(result, allow_usage=True)
