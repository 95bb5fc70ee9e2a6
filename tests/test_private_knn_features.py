"""Private kNN's feature spaces (cotrain.sampling.knn_features): which features the client's kNN
sees, and the feature network's bytes on the ledger."""

import numpy as np
import pytest
import torch

import cotrain.sampling.private_knn as pk
from cotrain.data.base import ArrayDataset
from cotrain.models import build_model
from cotrain.runtime.inprocess import InProcessGrid
from cotrain.sampling import EncoderConfig, encode, label_with_private_knn, random_encoder
from cotrain.sampling.knn_features import KNN_NETWORK, KnnClient, penultimate_features, share_knn_network

KNN = {"sampling_rate": 1.0, "k": 3, "sigma1": 1e-6, "threshold": 0.0, "sigma2": 1e-6}


def _setup():
    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(x=torch.rand(12, 3, 8, 8, generator=g), y=torch.arange(12) % 3, num_classes=3)
    phi = random_encoder(EncoderConfig(in_channels=3, image_size=8, width=2, dim=5), seed=0)
    net = build_model("small_cnn", input_shape=(3, 8, 8), num_classes=3, seed=1, width=2)
    client = KnnClient("client", data, seed=0, encoder=phi)
    return data, phi, net, client, InProcessGrid({"client": client})


def _spy(monkeypatch) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    real = pk.private_knn_labels

    def spy(query_features, client_features, *args, **kwargs):
        seen.append(client_features)
        return real(query_features, client_features, *args, **kwargs)

    monkeypatch.setattr(pk, "private_knn_labels", spy)
    return seen


def test_the_option_chooses_the_features_the_client_votes_in(monkeypatch):
    # Prepare
    data, phi, net, client, grid = _setup()
    seen = _spy(monkeypatch)
    share_knn_network(grid, net, model_name="small_cnn", options={"width": 2}, client="client", round=0)
    teacher_q = penultimate_features(net, data.x[:4]).numpy()
    # Execute: one request per space (the default is phi)
    label_with_private_knn(grid, encode(phi, data.x[:4]), client="client", options=KNN, round=1)
    _, labels, _ = label_with_private_knn(grid, teacher_q, client="client", options={**KNN, "knn_features": "teacher"},
                                          round=2)
    # Assert: phi(x) (5-d) then the normalised penultimate features (2w = 4-d after the 8x8 -> 1x1 pool)
    assert torch.allclose(seen[0], torch.from_numpy(encode(phi, data.x)))
    assert seen[1].shape == (12, 4) and torch.allclose(seen[1], penultimate_features(net, data.x))
    assert torch.allclose(seen[1].norm(dim=1), torch.ones(12))
    assert len(labels) == 4  # threshold 0, no noise: every query answered


def test_the_ledger_shows_the_feature_network_bytes():
    _, _, net, client, grid = _setup()
    n_bytes = sum(v.numel() * v.element_size() for v in net.state_dict().values())
    sent = share_knn_network(grid, net, model_name="small_cnn", options={"width": 2}, client="client", round=0)
    down = [e for e in grid.ledger.entries if e.kind == KNN_NETWORK and e.direction == "down"]
    assert sent == n_bytes and [e.bytes for e in down] == [n_bytes]
    assert all(torch.equal(a, b) for a, b in zip(client.knn_network.state_dict().values(), net.state_dict().values()))


def test_teacher_space_before_the_network_arrives_and_unknown_spaces_fail():
    data, phi, _, client, grid = _setup()
    q = encode(phi, data.x[:2])
    with pytest.raises(Exception, match="before the cloud sent its network"):
        label_with_private_knn(grid, q, client="client", options={**KNN, "knn_features": "teacher"}, round=0)
    with pytest.raises(Exception, match="unknown private-kNN feature space"):
        label_with_private_knn(grid, q, client="client", options={**KNN, "knn_features": "pixels"}, round=1)


def test_the_network_survives_the_client_state_round_trip():
    data, phi, net, client, grid = _setup()
    share_knn_network(grid, net, model_name="small_cnn", options={"width": 2}, client="client", round=0)
    fresh = KnnClient("client", data, seed=0)
    fresh.set_state(client.get_state())
    assert fresh.knn_network is not None and fresh.encoder is not None
    assert np.allclose(penultimate_features(fresh.knn_network, data.x).numpy(),
                       penultimate_features(net, data.x).numpy())
