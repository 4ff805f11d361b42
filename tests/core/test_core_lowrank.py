import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _core_fixtures import correlated_problem  # noqa: E402

from calderalab.core.hessian import factor_hessian  # noqa: E402
from calderalab.core.lowrank import exact_lowrank, lplr, solve_L, solve_R, weighted_loss  # noqa: E402


def test_identity_hessian_gives_truncated_svd():
    W, _ = correlated_problem(24, 40, seed=0)
    hd = factor_hessian(torch.eye(40), 1e-12)  # H ≈ I
    L, R = exact_lowrank(W, hd, 5)
    U, S, Vh = torch.linalg.svd(W.double())
    best = (U[:, :5] * S[:5]) @ Vh[:5]
    torch.testing.assert_close((L @ R).double(), best, rtol=1e-4, atol=1e-4)
    # Eckart–Young: the residual energy is the tail of the spectrum
    torch.testing.assert_close(weighted_loss(W, L @ R, torch.eye(40)), float((S[5:] ** 2).sum()), rtol=1e-4, atol=1e-4)


def test_weighted_loss_two_ways():
    W, H = correlated_problem(8, 16, seed=1, dtype=torch.float64)
    W_hat = W + 0.1 * torch.randn(8, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    D = W - W_hat
    evals, evecs = torch.linalg.eigh(H)
    H_half = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T
    via_trace = float(torch.trace(D @ H @ D.T))
    via_norm = float(torch.linalg.matrix_norm(D @ H_half) ** 2)
    assert abs(weighted_loss(W, W_hat, H) - via_trace) < 1e-4 * via_trace
    assert abs(via_norm - via_trace) < 1e-9 * via_trace
    assert abs(weighted_loss(W, W_hat, torch.eye(16)) - float((D**2).sum())) < 1e-5


def test_exact_lowrank_is_the_weighted_optimum():
    W, H = correlated_problem(32, 48, seed=3)
    hd = factor_hessian(H, 0.01)
    L, R = exact_lowrank(W, hd, 6)
    best = weighted_loss(W, L @ R, hd.H)
    gen = torch.Generator().manual_seed(4)
    for _ in range(5):  # any perturbation of the optimum is worse
        dL = 1e-2 * torch.randn(L.shape, generator=gen)
        assert weighted_loss(W, (L + dL) @ R, hd.H) > best
    U, S, Vh = torch.linalg.svd(W)  # the unweighted SVD is a worse H-weighted fit
    assert weighted_loss(W, (U[:, :6] * S[:6]) @ Vh[:6], hd.H) > best


def test_least_squares_steps_never_increase_the_objective():
    W, H = correlated_problem(32, 48, seed=5)
    hd = factor_hessian(H, 0.01)
    gen = torch.Generator().manual_seed(6)
    L, R = torch.randn(32, 4, generator=gen), torch.randn(4, 48, generator=gen)
    loss = weighted_loss(W, L @ R, hd.H)
    for _ in range(5):
        R = solve_R(W, L)
        after_R = weighted_loss(W, L @ R, hd.H)
        L = solve_L(W @ hd.H, R, hd.H)
        after_L = weighted_loss(W, L @ R, hd.H)
        assert after_R <= loss * (1 + 1e-6) and after_L <= after_R * (1 + 1e-6)
        loss = after_L


def test_lplr_keeps_the_best_quantised_pair():
    W, H = correlated_problem(32, 48, seed=7)
    hd = factor_hessian(H, 0.01)
    f0 = lplr(W, hd, 8, 3, inner_iters=0)
    f5 = lplr(W, hd, 8, 3, inner_iters=5)
    assert f5.Lt.shape == (8, 32) and f5.R.shape == (8, 48) and f5.Lt.bits == 3
    assert weighted_loss(W, f5.product(), hd.H) <= weighted_loss(W, f0.product(), hd.H)
    # 8-bit factors lose almost nothing against the unquantised optimum
    L, R = exact_lowrank(W, hd, 8)
    f8 = lplr(W, hd, 8, 8, inner_iters=2)
    assert weighted_loss(W, f8.product(), hd.H) < 1.01 * weighted_loss(W, L @ R, hd.H)


def test_factored_loss_equals_weighted_loss_up_to_its_constant():
    # lplr ranks candidate pairs by ⟨LᵀL, RHRᵀ⟩ − 2⟨L, AHRᵀ⟩; adding tr(AHAᵀ) must give the weighted loss
    from calderalab.core.lowrank import _loss_up_to_constant

    W, H = correlated_problem(40, 56, seed=3)
    hd = factor_hessian(H, 0.01)
    f = lplr(W, hd, 6, 3, inner_iters=1)
    AH = (W @ hd.H).double()
    constant = float((AH * W.double()).sum())
    got = _loss_up_to_constant(AH, hd.H.double())(f) + constant
    assert abs(got - weighted_loss(W, f.product(), hd.H)) <= 1e-5 * constant


def test_randomized_svd_recovers_planted_rank_and_is_near_optimal_and_seeded():
    """A matrix of exact rank k comes back exactly; on a slowly decaying spectrum the rank-k residual is
    within 2% of Eckart–Young's; the same input gives the same bits; a sketch as wide as the matrix is
    the exact SVD."""
    from calderalab.core.lowrank import RSVD_OVERSAMPLE, randomized_svd

    gen = torch.Generator().manual_seed(5)
    A, B = torch.randn(300, 12, generator=gen), torch.randn(12, 200, generator=gen)
    planted = A @ B  # (300, 200), rank 12
    U, S, Vh = randomized_svd(planted, 12)
    assert float((planted - (U * S) @ Vh).norm() / planted.norm()) < 1e-5

    decaying = torch.randn(300, 200, generator=gen) @ torch.diag(torch.logspace(0, -1, 200))  # flat: hard for a sketch
    k = 20
    U, S, Vh = randomized_svd(decaying, k)
    Ue, Se, Vhe = torch.linalg.svd(decaying, full_matrices=False)
    optimum = float((decaying - (Ue[:, :k] * Se[:k]) @ Vhe[:k]).norm())
    got = float((decaying - (U * S) @ Vh).norm())
    assert optimum <= got < 1.02 * optimum
    assert got > optimum * (1 + 1e-6)  # a sketch, not the exact SVD in disguise
    again = randomized_svd(decaying, k)
    assert all(torch.equal(a, b) for a, b in zip((U, S, Vh), again))

    small = decaying[:, : k + RSVD_OVERSAMPLE]
    U, S, Vh = randomized_svd(small, k)
    torch.testing.assert_close(S, torch.linalg.svdvals(small)[:k])


def test_randomized_lplr_start_lands_where_the_exact_one_does():
    """After the inner least-squares rounds, a randomized start gives the weighted loss of the exact one
    within 2% on a correlated problem (the property caldera's svd option relies on)."""
    W, H = correlated_problem(64, 96, seed=3)
    hd = factor_hessian(H, 0.01)
    exact = lplr(W, hd, 16, 4, 3, "exact")
    sketch = lplr(W, hd, 16, 4, 3, "randomized")
    e, s = (weighted_loss(W, f.product(), H) for f in (exact, sketch))
    assert abs(s - e) < 0.02 * e
