"""Label-multiset search by the head residual (cotrain.audit.head_solve.refine_labels)."""

import torch

from cotrain.audit.head_solve import head_residual, refine_labels, solve_embeddings


def _upload(b: int = 6, d: int = 12, k: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(k, d, generator=gen, dtype=torch.float64) * 0.3
    bias = torch.zeros(k, dtype=torch.float64)
    e = torch.rand(b, d, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 3, 5, 6])[:b]
    r = torch.softmax(e @ w.T + bias, 1) - torch.nn.functional.one_hot(y, k).double()
    return w, bias, r.T @ e / b, r.mean(0), e, y


def test_a_wrong_label_is_corrected_and_the_solve_then_finds_e() -> None:
    # Prepare: the true multiset {0,1,1,3,5,6}; recovery read one "3" as a "2"
    w, bias, dw, db, e_true, y = _upload()
    wrong = torch.tensor([0, 1, 1, 2, 5, 6])
    init_for = lambda lab: torch.full((6, 12), 0.5, dtype=torch.float64)  # noqa: E731
    # Execute
    fixed = refine_labels(w, bias, dw, db, wrong, init_for)
    e_wrong, res_wrong = solve_embeddings(w, bias, dw, db, wrong, init_for(wrong))
    e_fixed, res_fixed = solve_embeddings(w, bias, dw, db, fixed, init_for(fixed))
    # Assert: the multiset is the truth, the residual falls by orders of magnitude, E is rebuilt
    assert fixed.tolist() == sorted(y.tolist())
    assert res_fixed < 1e-3 * res_wrong
    assert _best_match(e_fixed, e_true) > 0.99  # rows of one class come in any order
    assert _best_match(e_wrong, e_true) < 0.99


def _best_match(e_hat: torch.Tensor, e_true: torch.Tensor) -> float:
    """Worst, over the true rows, of the best cosine any rebuilt row reaches."""
    n_hat = torch.nn.functional.normalize(e_hat, dim=1)
    n_true = torch.nn.functional.normalize(e_true, dim=1)
    return float((n_true @ n_hat.T).max(1).values.min())


def test_the_true_multiset_is_kept() -> None:
    w, bias, dw, db, _, y = _upload(seed=1)
    init_for = lambda lab: torch.full((6, 12), 0.5, dtype=torch.float64)  # noqa: E731
    assert refine_labels(w, bias, dw, db, y.flip(0), init_for).tolist() == sorted(y.tolist())


def test_the_residual_is_zero_at_the_truth() -> None:
    # hand check of what the search ranks by: rho(E_true) with the true labels is 0
    w, bias, dw, db, e, y = _upload(seed=2)
    onehot = torch.nn.functional.one_hot(y, 8).double()
    assert head_residual(w, bias, dw, db, onehot, e) < 1e-20


def test_reconstruct_features_uses_the_corrected_labels() -> None:
    # Prepare: an untrained MLP, batch {0,1,1,3}; the server's class-probability matrix wrongly says the
    # model is confident, so label-count recovery errs (seeds 10 and 13 found by trying seeds 0-19)
    from cotrain.audit import ReconstructionSettings, auxiliary_prior, reconstruct_features
    from cotrain.audit.threat_model import simulate_upload
    from cotrain.models import build_model

    k = 5
    for seed in (10, 13):
        model = build_model("mlp", input_shape=(10,), num_classes=k, seed=seed, hidden=[8, 12])
        gen = torch.Generator().manual_seed(seed)
        x, y = torch.randn(4, 10, generator=gen), torch.tensor([0, 1, 1, 3])
        upload = simulate_upload(model, x, y)
        prior = auxiliary_prior(model, torch.randn(100, 10, generator=gen), torch.arange(100) % k)
        wrong_m = torch.full((k, k), 0.02) + 0.9 * torch.eye(k)
        with torch.no_grad():
            e_true = model.features(x)
        # Execute
        off, on = (reconstruct_features(model, upload, prior=prior, class_probs=wrong_m,
                                        settings=ReconstructionSettings(steps=0, label_search=s)) for s in (False, True))
        # Assert: without the search the multiset is wrong; with it, right
        assert off.labels.tolist() != [0, 1, 1, 3]
        assert on.labels.tolist() == [0, 1, 1, 3]
        # E(X) from the right multiset is far closer (seed 10: worst match 0.94 vs 0.74; seed 13: 1.00 vs 0.83)
        on_match, off_match = (_best_match(r.embeddings.double(), e_true.double()) for r in (on, off))
        assert on_match > 0.9 and on_match > off_match + 0.1
