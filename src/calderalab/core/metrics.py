"""Error metrics between a weight W and its approximation Ŵ. Imports torch only.

All are computed in float64 and returned as Python floats.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_pair(W: Tensor, W_hat: Tensor) -> None:
    if W.dim() != 2 or W.shape != W_hat.shape:
        raise ValueError(f"W {tuple(W.shape)} and W_hat {tuple(W_hat.shape)} must be 2-D of the same shape")


def relative_error(W: Tensor, W_hat: Tensor, H: Tensor | None = None) -> float:
    """√( tr(Δ H Δᵀ) / tr(W H Wᵀ) ), Δ = W − Ŵ; with H None, H = I (relative Frobenius error).

    Shapes: W, W_hat (d_out, d_in); H (d_in, d_in) positive semi-definite.
    """
    _check_pair(W, W_hat)
    W64 = W.double()
    D = W64 - W_hat.double()  # (d_out, d_in)
    if H is None:
        num, den = float((D * D).sum()), float((W64 * W64).sum())
    else:
        if H.shape != (W.shape[1], W.shape[1]):
            raise ValueError(f"H {tuple(H.shape)} must be (d_in, d_in) = {(W.shape[1], W.shape[1])}")
        H64 = H.double()
        num, den = float(((D @ H64) * D).sum()), float(((W64 @ H64) * W64).sum())
    if den <= 0 and num <= 0:
        return 0.0  # a zero (say pruned) W reconstructed exactly
    if den <= 0:
        raise ValueError(f"tr(W H Wᵀ) = {den}: the relative error of a zero (or H-null) W is undefined")
    return math.sqrt(max(num, 0.0) / den)


def weight_correlation(W: Tensor, W_hat: Tensor) -> float:
    """Pearson correlation of the entries of W and Ŵ (d_out, d_in); nan when either is constant."""
    _check_pair(W, W_hat)
    a = W.double().reshape(-1)
    b = W_hat.double().reshape(-1)
    a, b = a - a.mean(), b - b.mean()
    denom = float(a.norm() * b.norm())
    return float((a * b).sum()) / denom if denom > 0 else float("nan")


def sqnr_db(W: Tensor, W_hat: Tensor) -> float:
    """Signal-to-quantisation-noise ratio 10·log10(‖W‖²_F / ‖W − Ŵ‖²_F) in dB (inf when Ŵ == W)."""
    _check_pair(W, W_hat)
    signal = float((W.double() ** 2).sum())
    noise = float(((W.double() - W_hat.double()) ** 2).sum())
    if noise == 0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf
