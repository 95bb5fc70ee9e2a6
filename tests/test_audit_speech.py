"""The audit on speech: log-mel spectrograms of generated audio through ``audio_cnn``."""

import math

import torch

from cotrain.audit import ReconstructionSettings, auxiliary_prior, reconstruct_features
from cotrain.audit.head_solve import solve_embeddings
from cotrain.audit.labels import head_gradients, recover_labels
from cotrain.audit.scoring import match
from cotrain.audit.threat_model import simulate_upload
from cotrain.data.audio import log_mel
from cotrain.models import build_model


def _tones(n: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class k: a tone at 300 * (k + 1) Hz with random phase, amplitude and noise, 0.25 s at 8 kHz."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    t = torch.arange(2000) / 8000.0
    f = 300.0 * (y.float() + 1)[:, None]
    waves = (0.5 + torch.rand(n, 1, generator=g)) * torch.sin(2 * math.pi * f * t + 6.3 * torch.rand(n, 1, generator=g))
    waves = waves + 0.05 * torch.randn(n, 2000, generator=g)
    return log_mel(waves, 8000, n_mels=16, n_fft=256), y  # (n, 1, 16, 16)


def test_speech_audit_batch_one_exact_and_small_batch_head_solve():
    x, y = _tones(40, 4, seed=0)
    model = build_model("audio_cnn", input_shape=tuple(x.shape[1:]), num_classes=4, seed=0, width=4)
    up = simulate_upload(model, x[:1], y[:1])
    prior = auxiliary_prior(model, x[20:], y[20:])
    rec = reconstruct_features(model, up, prior=prior, settings=ReconstructionSettings(steps=2))
    with torch.no_grad():
        e1 = model.features(x[:1])
    assert rec.labels.tolist() == y[:1].tolist()
    assert match(rec.embeddings, e1).mean_cosine > 0.9999
    # batch 3 <= K = 4: E(X) solved from the head's gradient alone
    up3 = simulate_upload(model, x[:3], y[:3])
    labels = recover_labels(model, up3, 3)
    assert labels.tolist() == sorted(y[:3].tolist())
    dw, db = head_gradients(model, up3)
    with torch.no_grad():
        e3 = model.features(x[:3])
        start = model.features(x[20:23][torch.argsort(y[20:23])])
    solved, residual = solve_embeddings(model.head.weight, model.head.bias, dw, db, labels, start)
    assert residual < 1e-3
    assert match(solved, e3).success_rate == 1.0
