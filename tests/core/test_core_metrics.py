import math

import pytest
import torch

from calderalab.core import relative_error, sqnr_db, weight_correlation


def _pair(seed=0):
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(6, 10, generator=gen, dtype=torch.float64)
    return W, W + 0.1 * torch.randn(6, 10, generator=gen, dtype=torch.float64)


def test_relative_error_two_ways():
    W, W_hat = _pair()
    X = torch.randn(50, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    H = X.T @ X / 50
    # via the layer outputs: ‖(W − Ŵ)Xᵀ‖_F / ‖W Xᵀ‖_F equals the trace form with H = XᵀX/n
    via_outputs = float(torch.linalg.matrix_norm((W - W_hat) @ X.T) / torch.linalg.matrix_norm(W @ X.T))
    assert abs(relative_error(W, W_hat, H) - via_outputs) < 1e-12
    assert abs(relative_error(W, W_hat) - float((W - W_hat).norm() / W.norm())) < 1e-12


def test_sqnr_and_correlation():
    W, W_hat = _pair(2)
    assert abs(sqnr_db(W, W_hat) - (-20 * math.log10(relative_error(W, W_hat)))) < 1e-9
    assert sqnr_db(W, W) == math.inf
    assert abs(weight_correlation(W, W) - 1) < 1e-12 and abs(weight_correlation(W, -W) + 1) < 1e-12
    ref = float(torch.corrcoef(torch.stack([W.reshape(-1), W_hat.reshape(-1)]))[0, 1])
    assert abs(weight_correlation(W, W_hat) - ref) < 1e-12


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\(6, 10\).*\(6, 9\)"):
        relative_error(torch.zeros(6, 10), torch.zeros(6, 9))
    with pytest.raises(ValueError, match="undefined"):
        relative_error(torch.zeros(2, 3), torch.ones(2, 3))
    assert relative_error(torch.zeros(2, 3), torch.zeros(2, 3)) == 0.0  # a pruned module kept exactly
