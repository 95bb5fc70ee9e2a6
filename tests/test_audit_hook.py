import pytest
import torch

from cotrain.experiment.crosscutting.audit import AuditObserver, AuditSection
from cotrain.federated.records import TrainResult
from cotrain.models import build_model


def _gradient_upload(tiny_dataset):
    """A tiny CNN and the gradient of the first 4 samples (model, x, y, gradients)."""
    model = build_model("small_cnn", input_shape=(1, 8, 8), num_classes=3, seed=0, width=4)
    x, y = tiny_dataset.x[:4], tiny_dataset.y[:4]
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    return model, x, y, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_observer_attacks_chosen_round_and_scores(tiny_dataset):
    model, x, y, grads = _gradient_upload(tiny_dataset)
    truth = lambda pid: (x, y, {"flag": tiny_dataset.attributes["flag"][:4]})  # noqa: E731
    obs = AuditObserver(AuditSection(rounds=[2], attribute="flag", aux_samples=60, steps=3),
                        tiny_dataset.subset(range(100, 200)), truth)
    obs(1, {"p0": TrainResult(grads, "gradient", 50, 4, 0.0)}, model)
    assert obs.rows == []
    obs(2, {"p0": TrainResult(grads, "gradient", 50, 4, 0.0)}, model)
    assert len(obs.rows) == 1 and obs.rows[0]["batch_size"] == 4
    assert obs.rows[0]["attribute_accuracy"] * 4 in (0.0, 1.0, 2.0, 3.0, 4.0)  # a share of the batch's 4 samples


def test_audit_config_for_saved_run(tmp_path):
    from cotrain.experiment.crosscutting.audit import audit_config_for
    from cotrain.experiment.config import demo_config, save_config, with_overrides

    run = tmp_path / "demo"
    run.mkdir()
    save_config(with_overrides(demo_config(quick=True), {"fedavg.upload": "gradient"}), run / "config.toml")
    cfg = audit_config_for(run, rounds=[2], attribute="marker")
    assert cfg.audit.enabled and cfg.audit.rounds == [2] and cfg.audit.attribute == "marker"
    assert cfg.run.name == "demo-audit" and cfg.run.output_dir == str(tmp_path.resolve())


def test_observer_scores_the_majority_guess_on_the_audited_batch(tiny_dataset):
    from cotrain.data.base import ArrayDataset

    # Prepare: the server's aux samples hold flag 1 three times in four, so its majority guess is 1;
    # the audited batch's flags are 1, 1, 0, 1: the guess is right on 3 of 4
    model, x, y, grads = _gradient_upload(tiny_dataset)
    aux_x, aux_y = tiny_dataset.x[100:200], tiny_dataset.y[100:200]
    aux = ArrayDataset(x=aux_x, y=aux_y, attributes={"flag": (torch.arange(100) % 4 != 0).long()}, num_classes=3)
    truth = lambda pid: (x, y, {"flag": torch.tensor([1, 1, 0, 1])})  # noqa: E731
    obs = AuditObserver(AuditSection(rounds=[1], attribute="flag", aux_samples=60, steps=0), aux, truth)
    # Execute
    obs(1, {"p0": TrainResult(grads, "gradient", 50, 4, 0.0)}, model)
    # Assert
    assert obs.rows[0]["majority_accuracy"] == 0.75


def test_audit_stop_rule_is_a_config_key_checked_in_one_line():
    from cotrain.errors import ConfigError
    from cotrain.experiment.config import demo_config, with_overrides

    # Prepare: a FedSGD demo run with the audit on
    cfg = with_overrides(demo_config(quick=True), {"fedavg.upload": "gradient", "audit.enabled": True})
    # Execute / Assert: a known rule reaches the section, an unknown one is one line naming the key
    assert with_overrides(cfg, {"audit.stop": "relative_change"}).audit.stop == "relative_change"
    with pytest.raises(ConfigError, match=r"^audit\.stop: .*relative_change, tolerance"):
        with_overrides(cfg, {"audit.stop": "plateau"})


def test_observer_passes_the_stop_rule_to_the_reconstruction(tiny_dataset, monkeypatch):
    import cotrain.experiment.crosscutting.audit as hook

    # Prepare: record the settings the observer hands to the attack
    model, x, y, grads = _gradient_upload(tiny_dataset)
    seen = []
    real = hook.audit_upload
    monkeypatch.setattr(hook, "audit_upload", lambda *a, settings, **k: seen.append(settings) or real(
        *a, settings=settings, **k))
    truth = lambda pid: (x, y, {"flag": tiny_dataset.attributes["flag"][:4]})  # noqa: E731
    section = AuditSection(rounds=[1], attribute="flag", aux_samples=60, steps=2, stop="tolerance", rel_tol=0.01)
    # Execute
    AuditObserver(section, tiny_dataset.subset(range(100, 200)), truth)(
        1, {"p0": TrainResult(grads, "gradient", 50, 4, 0.0)}, model)
    # Assert
    assert [(s.stop, s.rel_tol) for s in seen] == [("tolerance", 0.01)]
