"""The CALDERA alternating solver, W ≈ Q + L·R, in the (already normalised, rotated) basis.

Imports torch only (plus calderalab.errors through ldlq).

Algorithm (Saha, Srivastava, Candès, Pilanci, NeurIPS 2024, Alg. 1, as the reference code runs it):
    Q ← 0, L ← 0, R ← 0
    for t = 1..outer_iters:
        L, R ← LPLR(W − Q)      exact rank-k start from the SVD of (W − Q)H^½, then inner_iters
                                rounds of closed-form weighted least squares, factors quantised
        Q    ← LDLQ(W − L·R)    b_Q-bit Hessian-aware rounding
        e_t  ← √( tr(ΔHΔᵀ) / tr(WHWᵀ) ),  Δ = W − Q − L·R
    return the iterate with the smallest e_t
The quantised steps are not monotone (rounding can raise the loss), hence "keep the best".
H is damped once, H/mean(diag H) + damp·I, on a copy; e_t uses the undamped H.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from calderalab.core.hessian import factor_hessian
from calderalab.core.e8p_matrix import E8PMatrix
from calderalab.core.ldlq import ldlq_quantize, ldlq_quantize_e8p
from calderalab.core.lowrank import LowRankFactors, lplr, weighted_loss
from calderalab.core.metrics import relative_error
from calderalab.core.quantize import QuantizedMatrix


@dataclass(frozen=True)
class SolveResult:
    """The kept iterate. Q: codes (d_out, d_in); factors: Lᵀ (k, d_out), R (k, d_in) or None (rank 0);
    errors: e_t for every outer iteration; best_iter: index of the kept one."""

    Q: QuantizedMatrix | E8PMatrix
    factors: LowRankFactors | None
    errors: tuple[float, ...]
    best_iter: int


def _ldlq_backbone(W: Tensor, U: Tensor, bits: int, group_size: int | None, codebook: str) -> QuantizedMatrix | E8PMatrix:
    """LDLQ of W (d_out, d_in) onto the scalar grid or, for codebook "e8p", the E8P codebooks (2-4 bits)."""
    if codebook == "e8p":
        return ldlq_quantize_e8p(W, U, group_size, bits)
    return ldlq_quantize(W, U, bits, group_size)


def ldlq_solve(W: Tensor, H: Tensor, bits: int, group_size: int | None, damp: float, codebook: str = "scalar") -> SolveResult:
    """Rank-0 solve: Q = LDLQ(W). W: (d_out, d_in) float32, H: (d_in, d_in)."""
    Q = _ldlq_backbone(W, factor_hessian(H, damp).inv_chol_upper, bits, group_size, codebook)
    return SolveResult(Q, None, (relative_error(W, Q.dequantize(), H),), 0)


def _relative(loss: float, energy: float) -> float:
    """√(loss / energy); a W with no energy under H (all zero, say a pruned module) is exact at zero loss."""
    if energy > 0:
        return (loss / energy) ** 0.5
    return 0.0 if loss == 0 else math.inf


def caldera_solve(
    W: Tensor,
    H: Tensor,
    *,
    bits: int,
    rank: int,
    lr_bits: int,
    group_size: int | None,
    outer_iters: int,
    inner_iters: int,
    damp: float,
    codebook: str = "scalar",
    svd: str = "exact",
) -> SolveResult:
    """Alternate LPLR and LDLQ for `outer_iters` rounds and keep the best iterate.

    W: (d_out, d_in) float32; H: (d_in, d_in) undamped Hessian (any dtype; factorised in float64).
    """
    hd = factor_hessian(H, damp)
    H32 = H.float()
    energy = weighted_loss(W, torch.zeros_like(W), H32)  # tr(W H Wᵀ), undamped
    Q_hat = torch.zeros_like(W)  # (d_out, d_in)
    best: SolveResult | None = None
    errors: list[float] = []
    for t in range(outer_iters):
        factors = lplr(W - Q_hat, hd, rank, lr_bits, inner_iters, svd)
        LR = factors.product()  # (d_out, d_in)
        Q = _ldlq_backbone(W - LR, hd.inv_chol_upper, bits, group_size, codebook)
        Q_hat = Q.dequantize()
        errors.append(_relative(max(weighted_loss(W, Q_hat + LR, H32), 0.0), energy))
        if best is None or errors[-1] < best.errors[best.best_iter]:
            best = SolveResult(Q, factors, tuple(errors), t)
    assert best is not None
    return SolveResult(best.Q, best.factors, tuple(errors), best.best_iter)
