"""Every ``examples/*.toml`` parses and validates; the quick in-process ones run for one round."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cotrain.data import available_datasets
from cotrain.experiment import demo_config, load_config, prepare, run_experiment, with_overrides

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml"))
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ACCURACY_FLOOR = {"fedavg_synthetic": 0.3}  # after one round; others only need to lie in [0, 1]


def ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def round_key(cfg) -> str:
    """The dotted key holding the number of rounds (or epochs) of the example's method."""
    section = getattr(cfg, cfg.method.name)
    name = next(k for k in ("rounds", "epochs") if k in type(section).model_fields)
    return f"{cfg.method.name}.{name}"


def quick(path: Path) -> bool:
    cfg = load_config(path)
    return cfg.data.dataset == "synthetic" and cfg.run.runtime == "inprocess"


def test_there_are_examples_for_fedavg_fedsgd_mnist_and_flower():
    stems = set(ids(EXAMPLES))
    assert {"fedavg_synthetic", "fedsgd_synthetic", "fedavg_mnist", "fedavg_flower_simulation",
            "fedavg_flower_deployment"} <= stems


@pytest.mark.parametrize("path", EXAMPLES, ids=ids(EXAMPLES))
def test_example_parses_and_validates(path: Path):
    cfg = load_config(path)
    assert cfg.run.name and round_key(cfg)
    text = path.read_text(encoding="utf-8")
    assert text.lstrip().startswith("#"), "examples start with a comment saying what they show"


def test_fedavg_synthetic_example_is_the_demo():
    cfg = load_config(EXAMPLES[ids(EXAMPLES).index("fedavg_synthetic")])
    assert with_overrides(cfg, {"run.name": "demo"}) == demo_config()


QUICK = [p for p in EXAMPLES if quick(p)]


@pytest.mark.parametrize("path", QUICK, ids=ids(QUICK))
def test_quick_example_runs_one_round(path: Path, tmp_path: Path):
    cfg = load_config(path)
    overrides = {round_key(cfg): 1, "run.output_dir": str(tmp_path)}
    if cfg.audit.enabled:  # audited rounds past the last one are a config error: audit the one round
        overrides["audit.rounds"] = [1]
    if round_key(cfg).endswith("epochs"):  # an epoch's cost grows with the data: keep the smoke test small
        overrides.update({"data.max_train_samples": 300, "data.max_test_samples": 200})
    if "leakage_samples" in type(getattr(cfg, cfg.method.name)).model_fields:  # the method's own tests cover it
        overrides[f"{cfg.method.name}.leakage_samples"] = 0
    result = run_experiment(with_overrides(cfg, overrides))
    acc = result.summary["final_test_accuracy"]
    assert result.summary["rounds"] == 1
    assert ACCURACY_FLOOR.get(path.stem, 0.0) <= acc <= 1.0, acc
    assert (result.run_dir / "report.html").exists()


def _found(dataset: str) -> bool:
    return any(i.name == dataset and i.found for i in available_datasets(SHARED_DATA))


REAL = [p for p in EXAMPLES if not quick(p) and load_config(p).run.runtime == "inprocess"]


@pytest.mark.slow
@pytest.mark.parametrize("path", REAL, ids=ids(REAL))
def test_real_data_example_prepares_when_its_data_is_present(path: Path, monkeypatch: pytest.MonkeyPatch):
    cfg = load_config(path)
    if not SHARED_DATA.is_dir() or not _found(cfg.data.dataset):
        pytest.skip(f"{cfg.data.dataset} is not in ../shared/data")
    if cfg.data.data_dir is None and not os.environ.get("COTRAIN_DATA"):
        monkeypatch.setenv("COTRAIN_DATA", str(SHARED_DATA))
    method = prepare(cfg)
    assert method.total_rounds >= 1
