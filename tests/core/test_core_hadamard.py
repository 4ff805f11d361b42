import math

import pytest
import torch

from calderalab.core.hadamard import _block, inverse_rht, kron_factors, rht

REAL_DIMS = [64, 192, 576, 896, 1536, 2048, 3584, 4096, 4864, 8192, 11008, 14336, 18944, 29568]


@pytest.mark.parametrize("n", REAL_DIMS + [1, 3, 12, 20, 100])
def test_norm_preserving_and_invertible(n):
    x = torch.randn(3, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    y = rht(x, seed=5)
    torch.testing.assert_close(y.norm(dim=1), x.norm(dim=1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(inverse_rht(y, seed=5), x, rtol=0, atol=1e-12)
    assert math.prod(size for _, size in kron_factors(n)) == n
    assert max((size for _, size in kron_factors(n)), default=1) <= 1024  # never an n×n dense matrix


@pytest.mark.parametrize("n", [64, 192, 576, 896])
def test_small_dims_exactly_orthogonal(n):
    M = rht(torch.eye(n, dtype=torch.float64), seed=1, dim=0)  # (n, n): columns are M·diag(s)·e_i
    torch.testing.assert_close(M.T @ M, torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-12)
    if all(kind != "dct" for kind, _ in kron_factors(n)):
        # a true Hadamard matrix: every entry ±1/√n (maximal incoherence)
        torch.testing.assert_close(M.abs(), torch.full_like(M, n**-0.5), rtol=0, atol=1e-12)


def test_real_dims_use_hadamard_blocks_except_11008():
    for n in REAL_DIMS:
        kinds = {kind for kind, _ in kron_factors(n)}
        assert ("dct" in kinds) == (n == 11008), (n, kron_factors(n))


@pytest.mark.parametrize("kind, order", [("paley1", 12), ("paley2", 28), ("paley1", 44), ("paley2", 76), ("paley2", 148)])
def test_paley_blocks_are_hadamard(kind, order):
    B = _block(kind, order) * math.sqrt(order)
    torch.testing.assert_close(B.abs(), torch.ones_like(B))
    torch.testing.assert_close(B @ B.T, order * torch.eye(order, dtype=torch.float64))


def test_seeded_and_dim_argument():
    x = torch.randn(6, 576, generator=torch.Generator().manual_seed(0))
    assert torch.equal(rht(x, 3), rht(x, 3))
    assert not torch.allclose(rht(x, 3), rht(x, 4))
    torch.testing.assert_close(rht(x.T, 3, dim=0), rht(x, 3).T)
    assert torch.equal(x, torch.randn(6, 576, generator=torch.Generator().manual_seed(0)))  # input untouched
