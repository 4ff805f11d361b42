import pytest
import torch

from calderalab.calib import HessianAccumulator


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_streamed_equals_one_shot(dtype):
    gen = torch.Generator().manual_seed(0)
    chunks = [torch.randn(b, 5, 16, generator=gen, dtype=torch.float64) for b in (1, 3, 2)]
    acc = HessianAccumulator(16, dtype=dtype)
    for X in chunks:
        acc.update(X)
    X_all = torch.cat([c.reshape(-1, 16) for c in chunks])  # (30, 16)
    expected = X_all.T @ X_all / X_all.shape[0]
    H = acc.hessian(torch.float64)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(H, expected, rtol=tol, atol=tol)
    assert acc.n_tokens == 30
    assert torch.equal(H, H.T)


def test_hessian_returns_copy_and_default_float32():
    acc = HessianAccumulator(4)
    acc.update(torch.eye(4))
    H = acc.hessian()
    assert H.dtype == torch.float32
    H.zero_()
    assert acc.hessian().abs().sum() > 0


def test_one_matmul_per_batch(monkeypatch):
    calls = []
    acc = HessianAccumulator(8)
    real = torch.Tensor.addmm_

    def counting(self, *a, **k):
        calls.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "addmm_", counting)
    acc.update(torch.randn(4, 100, 8))
    assert len(calls) == 1


def test_bad_inputs():
    with pytest.raises(ValueError, match="d_in"):
        HessianAccumulator(0)
    with pytest.raises(ValueError, match="dtype"):
        HessianAccumulator(4, dtype=torch.float16)
    acc = HessianAccumulator(4)
    with pytest.raises(ValueError, match="does not match d_in=4"):
        acc.update(torch.randn(3, 5))
    with pytest.raises(ValueError, match="zero tokens"):
        acc.hessian()


def test_bfloat16_products_within_their_rounding():
    """bfloat16 inputs multiplied in bfloat16 chunks: within 2⁻⁹ (one bfloat16 rounding per chunk) of the
    exact XᵀX of the same bfloat16 values, and really computed in bfloat16 (farther than float32's error)."""
    from calderalab.calib.hessian import PRODUCT_CHUNK

    gen = torch.Generator().manual_seed(0)
    X = (torch.randn(2 * PRODUCT_CHUNK + 300, 48, generator=gen) + 0.5).to(torch.bfloat16)  # three chunks, one short
    exact = X.double().T @ X.double() / X.shape[0]
    fast = HessianAccumulator(48, product_dtype=torch.bfloat16)
    fast.update(X[:1000])
    fast.update(X[1000:])
    slow = HessianAccumulator(48)
    slow.update(X)
    rel = lambda H: float((H.double() - exact).norm() / exact.norm())  # noqa: E731
    assert fast.n_tokens == X.shape[0]
    assert rel(slow.hessian()) < 1e-6
    assert 1e-6 < rel(fast.hessian()) < 2**-9
    with pytest.raises(ValueError, match="product_dtype"):
        HessianAccumulator(4, product_dtype=torch.float16)
