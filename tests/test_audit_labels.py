import torch

from cotrain.audit.labels import (head_gradients, largest_remainder, recover_label_counts, recover_labels,
                                  single_sample_embedding, class_probability_matrix)
from cotrain.audit.threat_model import simulate_upload
from cotrain.models import build_model


def test_batch_one_label_and_exact_embedding():
    model = build_model("mlp", input_shape=(1, 6, 6), num_classes=5, seed=0, hidden=[12, 8])
    for label in range(5):
        x = torch.rand(1, 1, 6, 6)
        up = simulate_upload(model, x, torch.tensor([label]))
        assert recover_labels(model, up, 1).tolist() == [label]
        dw, db = head_gradients(model, up)
        with torch.no_grad():
            e = model.features(x)[0]
        assert torch.allclose(single_sample_embedding(dw, db), e, atol=1e-5)


def test_label_counts_untrained_model():
    model = build_model("mlp", input_shape=(8,), num_classes=4, seed=1, hidden=[16])
    y = torch.tensor([0, 0, 0, 1, 2, 2, 3, 3])
    up = simulate_upload(model, torch.randn(8, 8) * 0.1, y)
    x_aux, y_aux = torch.randn(200, 8) * 0.1, torch.arange(200) % 4
    m = class_probability_matrix(model, x_aux, y_aux, 4)
    assert recover_labels(model, up, 8, m).tolist() == y.tolist()


def test_largest_remainder_and_present_classes():
    import numpy as np
    n = largest_remainder(np.array([0.5, 0.5, 0.0]), 5, np.array([0, 0, 1]))
    assert n.sum() == 5 and n[2] >= 1
    db = torch.tensor([-0.3, 0.1, 0.2])
    assert recover_label_counts(db, 1).tolist() == [1, 0, 0]
