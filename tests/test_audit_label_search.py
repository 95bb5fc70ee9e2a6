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
