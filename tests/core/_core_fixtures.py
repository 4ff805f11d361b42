"""Seeded small problems shared by the core tests (not a test module)."""

import torch


def correlated_problem(d_out=64, d_in=128, n=1024, seed=0, dtype=torch.float32):
    """W (d_out, d_in) Gaussian and H = XᵀX/n from correlated inputs X = Z·A (random mixing A)."""
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
    A = torch.randn(d_in, d_in, generator=gen, dtype=torch.float64) / d_in**0.5 + 0.1 * torch.eye(d_in, dtype=torch.float64)
    X = torch.randn(n, d_in, generator=gen, dtype=torch.float64) @ A  # (n, d_in)
    return W.to(dtype), (X.T @ X / n).to(dtype)
