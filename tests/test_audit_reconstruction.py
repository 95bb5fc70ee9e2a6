import torch

from cotrain.audit import ReconstructionSettings, UploadRecorder, auxiliary_prior, reconstruct_features
from cotrain.audit.api import audit_upload
from cotrain.audit.threat_model import simulate_upload
from cotrain.audit.scoring import match
from cotrain.federated.records import TrainResult
from cotrain.models import build_model


def test_positive_control_no_defence_tiny_model_small_batch():
    """No defence, tiny MLP, batch 2: both levels must be rebuilt (cosine > 0.95)."""
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(10,), num_classes=3, seed=0, hidden=[6, 8])
    x, y = torch.randn(2, 10), torch.tensor([0, 2])
    up = simulate_upload(model, x, y)
    x_aux, y_aux = torch.randn(60, 10), torch.arange(60) % 3
    prior = auxiliary_prior(model, x_aux, y_aux)
    rec = reconstruct_features(model, up, prior=prior,
                               settings=ReconstructionSettings(steps=300))
    with torch.no_grad():
        true_x, true_e = model.features(x, 1), model.features(x)
    assert rec.labels.tolist() == [0, 2]
    assert rec.equations_per_unknown > 1
    assert match(rec.features, true_x).success_rate == 1.0
    assert match(rec.embeddings, true_e).success_rate == 1.0
    # Cosine alone can flatter post-ReLU features; the matched features must also be close in norm.
    order = torch.as_tensor(match(rec.features, true_x).order)
    assert (rec.features - true_x[order]).norm() / true_x.norm() < 1e-2  # rec[i] ~ true[order[i]]
    assert (rec.embeddings - true_e[order]).norm() / true_e.norm() < 1e-2


def test_batch_one_embedding_is_exact_and_api(tiny_dataset):
    model = build_model("small_cnn", input_shape=(1, 8, 8), num_classes=3, seed=0, width=4)
    up = simulate_upload(model, tiny_dataset.x[:1], tiny_dataset.y[:1])
    res = audit_upload(model, up, tiny_dataset.subset(range(100, 200)), attribute="flag",
                       settings=ReconstructionSettings(steps=5))
    with torch.no_grad():
        e = model.features(tiny_dataset.x[:1])
    assert torch.nn.functional.cosine_similarity(res.embeddings, e).item() > 0.9999
    assert res.attribute_predictions.shape == (1,) and res.attribute_proportion.shape == (2,)
    assert res.labels.tolist() == tiny_dataset.y[:1].tolist()


def test_recorder_keeps_only_gradient_uploads_of_chosen_rounds():
    model = build_model("mlp", input_shape=(4,), num_classes=2, seed=0, hidden=[3])
    grads = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    rec = UploadRecorder(rounds={2})
    rec(1, {"a": TrainResult(grads, "gradient", 10, 4, 0.0)}, model)
    rec(2, {"a": TrainResult(grads, "gradient", 10, 4, 0.0), "b": TrainResult(grads, "parameters", 10, 4, 0.0)}, model)
    assert [(u.participant_id, u.round, u.batch_size) for u in rec.uploads] == [("a", 2, 4)]
