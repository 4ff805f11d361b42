"""Hessian-aware rounding (LDLQ, equivalently GPTQ) of a matrix onto a fixed group grid.

Imports torch and calderalab.errors only.

Objective (QuIP §3 / GPTQ): choose codes for W (d_out, d_in) minimising tr((W − Ŵ) H (W − Ŵ)ᵀ).
LDLQ rounds column j after adding the linear feedback of the rounding errors of columns < j;
with H⁻¹ = UᵀU (U upper triangular), the feedback is the GPTQ update
    err_j = (w_j − q_j) / U_jj,    w_{j'} ← w_{j'} − err_j · U_{j,j'}  for j' > j.
Updates are applied lazily in blocks of `block_size` columns (one matmul per block), so the Python
loop only touches (d_out,) vectors inside a block.

The grid (fp16 scale/offset per group) is fitted once on the input matrix, before feedback
("static groups"): every column of a group then shares one grid, and the stored grid is exactly
the one the codes were chosen on.
"""

from __future__ import annotations

import torch
from torch import Tensor

from calderalab.errors import CompressionError
from calderalab.core.quantize import QuantizedMatrix, effective_group_size, fit_grid

_MAX_DAMP_TRIES = 6  # damp, 10·damp, ... : a factor 10^5 before giving up


def damped_hessian(H: Tensor, damp: float) -> Tensor:
    """H / mean(diag H) + damp·I as a new float64 tensor (the caller's H is untouched).

    Args:
      H: (d_in, d_in), symmetric positive semi-definite with mean(diag H) > 0.
    """
    H = H.to(torch.float64)
    H = (H + H.T) / 2  # (d_in, d_in), removes float asymmetry from streamed accumulation
    mean_diag = H.diagonal().mean()
    if not mean_diag > 0:
        raise ValueError(f"Hessian has mean diagonal {float(mean_diag)}; it must be positive")
    return H / mean_diag + damp * torch.eye(H.shape[0], dtype=torch.float64, device=H.device)


def inverse_cholesky_upper(H: Tensor, damp: float) -> tuple[Tensor, Tensor]:
    """Upper Cholesky factor U of (H/mean diag H + λI)⁻¹, float64, raising the damping λ on failure.

    Tries λ = damp, 10·damp, …; raises CompressionError when the last one still fails.
    Returns: U (d_in, d_in) with UᵀU = H_damped⁻¹, and H_damped (d_in, d_in) itself (float64),
    so later steps use the same damping that succeeded here.
    """
    lam = damp
    for _ in range(_MAX_DAMP_TRIES):
        Hd = damped_hessian(H, lam)
        L, info = torch.linalg.cholesky_ex(Hd)
        if int(info) == 0:
            Hinv = torch.cholesky_inverse(L)  # (d_in, d_in)
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            if int(info) == 0 and torch.isfinite(U).all():
                return U, Hd
        lam *= 10.0
    raise CompressionError(f"cholesky of the damped Hessian failed up to damp={lam / 10:g}; the Hessian is degenerate")


def ldlq_quantize(
    W: Tensor, U: Tensor, bits: int, group_size: int | None, block_size: int = 128
) -> QuantizedMatrix:
    """LDLQ codes of W given the upper Cholesky factor U of the damped inverse Hessian.

    Args:
      W: (d_out, d_in) float32 target.
      U: (d_in, d_in) upper triangular, UᵀU = H_damped⁻¹ (from `inverse_cholesky_upper`).
    Returns:
      QuantizedMatrix with codes (d_out, d_in) and the grid fitted on W.
    """
    d_out, d_in = W.shape
    g = effective_group_size(d_in, group_size)
    scale, offset = fit_grid(W.float(), bits, g)  # (d_out, n_groups) each
    col_scale = scale.repeat_interleave(g, dim=1)  # (d_out, d_in)
    col_offset = offset.repeat_interleave(g, dim=1)  # (d_out, d_in)
    maxq = 2**bits - 1
    U = U.to(torch.float32)
    Wk = W.float().clone()  # working copy receiving the error feedback
    codes = torch.empty(d_out, d_in, dtype=torch.uint8, device=W.device)
    for i1 in range(0, d_in, block_size):
        i2 = min(i1 + block_size, d_in)
        W1 = Wk[:, i1:i2].clone()  # (d_out, B)
        U1 = U[i1:i2, i1:i2]  # (B, B)
        E1 = torch.empty_like(W1)  # (d_out, B) scaled errors
        for j in range(i2 - i1):
            w = W1[:, j]  # (d_out,)
            s, o = col_scale[:, i1 + j], col_offset[:, i1 + j]
            c = torch.round((w - o) / s).clamp_(0, maxq)
            codes[:, i1 + j] = c.to(torch.uint8)
            err = (w - (o + s * c)) / U1[j, j]
            W1[:, j:] -= err[:, None] * U1[j, j:][None, :]  # (d_out, B − j)
            E1[:, j] = err
        Wk[:, i2:] -= E1 @ U[i1:i2, i2:]  # (d_out, d_in − i2): the lazy block update
    return QuantizedMatrix(codes, scale.to(torch.float16), offset.to(torch.float16), bits, g)
