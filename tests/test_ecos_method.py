"""``[method] name = "ecos"``: the cloud selects from its pool by the client's noisy coverage scores."""

from pathlib import Path

import pytest

from _flower_helpers import needs_ray
from cotrain.errors import ConfigError
from cotrain.experiment import load_config, prepare, run_experiment, with_overrides

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ecos_synthetic.toml"


def test_ecos_selects_the_clients_domain_and_trains_a_model_for_it(tmp_path):
    # Prepare: the example (client: domain 0 only; pool: three domains, a third each), made smaller
    cfg = with_overrides(load_config(EXAMPLE), {"run.output_dir": str(tmp_path), "ecos.encoder_steps": 30,
                                                "ecos.budget": 120, "ecos.k": 12, "ecos.train_steps": 150})
    # Execute
    result = run_experiment(cfg)
    s = result.summary
    # Assert: mostly the client's domain (random would give a third), a useful model, the accountant's epsilon
    picked = s["selection_by_source"]
    assert sum(picked.values()) == 120 and picked["synthetic (domain 0)"] >= 2 * 120 / 3
    assert s["client_test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert s["ecos_epsilon"] == pytest.approx(1.0, abs=1e-3) and s["epsilon_by_party"] == {
        "participant-000": pytest.approx(s["ecos_epsilon"])}
    # only centroids, phi, noisy scores and the model crossed: nothing shaped like the client's images
    assert result.ledger.raw_data_findings((3, 32, 32)) == []
    assert s["bytes_scores"] == 12 * 4  # K float32 scores up
    # the report draws the coverage per cluster (noisy and, in process, exact) and the selection's sources
    assert (result.run_dir / "coverage.png").stat().st_size > 0
    assert "coverage per cluster" in (result.run_dir / "report.html").read_text()


def test_ecos_has_one_client(tmp_path):
    with pytest.raises(ConfigError, match="data.participants: ECOS has one client"):
        prepare(with_overrides(load_config(EXAMPLE), {"data.participants": 2}))


@needs_ray
def test_ecos_on_flower_equals_in_process(tmp_path):
    # Prepare: a small run, the cloud as ServerApp and the client as ClientApp on the simulation engine
    base = with_overrides(load_config(EXAMPLE), {"run.output_dir": str(tmp_path), "ecos.encoder_steps": 10,
                                                 "ecos.budget": 60, "ecos.k": 8, "ecos.train_steps": 30})
    # Execute
    local = run_experiment(with_overrides(base, {"run.name": "local"}))
    remote = run_experiment(with_overrides(base, {"run.name": "remote", "run.runtime": "flower-simulation"}))
    # Assert: the same selection, model accuracy, spend and bytes, message for message
    a, b = local.summary, remote.summary
    for key in ("selection_by_source", "client_test_accuracy", "ecos_epsilon", "bytes_encoder", "bytes_centroids",
                "bytes_scores", "bytes_up", "bytes_down", "epsilon_by_party"):
        assert a[key] == b[key], key
    assert [(e.kind, e.sender, e.receiver, e.bytes) for e in local.ledger.entries] == \
        [(e.kind, e.sender, e.receiver, e.bytes) for e in remote.ledger.entries]
    assert (remote.run_dir / "coverage.png").is_file()  # drawn from the noisy scores alone there


def test_an_ecos_run_resumed_after_the_exchange_releases_the_scores_once(tmp_path, monkeypatch):
    import cotrain.sampling.protocol as protocol
    from cotrain.experiment.checkpoint import RunInterrupted
    from cotrain.experiment.resume import resume_experiment

    # Prepare: the same small run twice, the second stopped right after the client's scores came in
    base = with_overrides(load_config(EXAMPLE), {"run.output_dir": str(tmp_path), "ecos.encoder_steps": 10,
                                                 "ecos.budget": 60, "ecos.k": 8, "ecos.train_steps": 30})
    whole = run_experiment(with_overrides(base, {"run.name": "whole"}))
    with pytest.raises(RunInterrupted) as stopped:
        run_experiment(with_overrides(base, {"run.name": "stopped"}), stop_after_round=0)
    # Execute: the client must not be asked again (a second release would spend epsilon twice)
    def ask_again(*args, **kwargs):
        raise AssertionError("the resumed run asked the client for its scores again")

    monkeypatch.setattr(protocol, "run_ecos", ask_again)
    resumed = resume_experiment(stopped.value.run_dir)
    # Assert: the uninterrupted run's selection, model, spend and messages; one release on the ledger
    a, b = whole.summary, resumed.summary
    for key in ("selection_by_source", "client_test_accuracy", "ecos_epsilon", "epsilon_by_party", "bytes_up",
                "bytes_down", "messages", "privacy_releases"):
        assert a[key] == b[key], key
    assert b["privacy_releases"] == 1 and b["status"] == "complete"
    assert [(e.kind, e.sender, e.receiver, e.bytes) for e in whole.ledger.entries] == \
        [(e.kind, e.sender, e.receiver, e.bytes) for e in resumed.ledger.entries]
