"""Hessian-aware rounding (LDLQ, equivalently GPTQ) of a matrix onto a fixed group grid.

Imports torch only.

Objective (QuIP §3 / GPTQ): choose codes for W (d_out, d_in) minimising tr((W − Ŵ) H (W − Ŵ)ᵀ).
LDLQ rounds column j after adding the linear feedback of the rounding errors of columns < j;
with H⁻¹ = UᵀU (U upper triangular), the feedback is the GPTQ update
    err_j = (w_j − q_j) / U_jj,    w_{j'} ← w_{j'} − err_j · U_{j,j'}  for j' > j.
Updates are applied lazily in blocks of `block_size` columns (one matmul per block), so the Python
loop only touches (d_out,) vectors inside a block.

The grid (fp16 scale/offset per group) is fitted once on the input matrix, before feedback
("static groups"): every column of a group then shares one grid, and the stored grid is exactly
the one the codes were chosen on. It is the MSE-clipped grid (`fit_grid(clip_search=True)`), not
min–max: inside CALDERA the target W − L·R is "previous Q plus noise", whose extremes stretch a
min–max range a little more every outer iteration (measured: the error then *rises* with every
iteration), while the clipped grid stays put; it also cuts LDLQ's own 2-bit error by about a third
on rotated Gaussian-like rows.

With the E8P codebook (`ldlq_quantize_e8p`, QuIP#'s BlockLDLQ) the unit of rounding is a block B of
8 columns, rounded jointly to the nearest codeword; its feedback is the block form of the same update,
    E_B = (W_B − Q_B)·U_BB⁻¹,    W_{>B} ← W_{>B} − E_B · U_{B,>B},
which is the OBS compensation for fixing B: with H_T⁻¹ = U_TᵀU_T on the trailing set T,
(H_T⁻¹)_BB⁻¹ (H_T⁻¹)_{B,>B} = U_BB⁻¹ U_{B,>B}. For |B| = 1 it is the scalar update above.
"""

from __future__ import annotations

import torch
from torch import Tensor

from calderalab.core import e8p
from calderalab.core.e8p_matrix import E8PMatrix, decode_vectors, e8p_group_size, encode_vectors, fit_scale
from calderalab.core.quantize import QuantizedMatrix, effective_group_size, fit_grid


def ldlq_quantize(
    W: Tensor,
    U: Tensor,
    bits: int,
    group_size: int | None,
    grid: tuple[Tensor, Tensor] | None = None,
    block_size: int = 64,
) -> QuantizedMatrix:
    """LDLQ codes of W given the upper Cholesky factor U of the damped inverse Hessian.

    Args:
      W: (d_out, d_in) float32 target.
      U: (d_in, d_in) upper triangular, UᵀU = H_damped⁻¹ (`core.hessian.factor_hessian`).
      grid: (scale, offset), each (d_out, n_groups) holding fp16 values, to reuse a grid; None
        fits one on W (`fit_grid`).
    Returns:
      QuantizedMatrix with codes (d_out, d_in) and its grid.
    """
    d_out, d_in = W.shape
    g = effective_group_size(d_in, group_size)
    scale, offset = fit_grid(W.float(), bits, g, clip_search=True) if grid is None else (grid[0].float(), grid[1].float())
    # Work on Wᵀ: column j of W is row j here, contiguous, so each step of the column loop touches
    # contiguous memory (about 2x faster on CPU than strided columns; the same codes).
    row_scale = scale.repeat_interleave(g, dim=1).T.contiguous()  # (d_in, d_out)
    row_offset = offset.repeat_interleave(g, dim=1).T.contiguous()  # (d_in, d_out)
    maxq = 2**bits - 1
    U = U.to(torch.float32)
    Wt = W.float().T.contiguous()  # (d_in, d_out) working copy receiving the error feedback
    codes = torch.empty(d_in, d_out, dtype=torch.float32, device=W.device)
    for i1 in range(0, d_in, block_size):
        i2 = min(i1 + block_size, d_in)
        W1 = Wt[i1:i2].clone()  # (B, d_out)
        U1 = U[i1:i2, i1:i2]  # (B, B)
        E1 = torch.empty_like(W1)  # (B, d_out) scaled errors
        # The column loop is Python-bound (~10 small ops per column), so each op writes into its
        # destination row (codes, E1) in place and the rows come from one unbind per block: the same
        # arithmetic in the same order as  c = round((w − o)/s).clamp(0, maxq),  err = (w − (o + s·c))/U_jj.
        rows = zip(W1.unbind(0), row_scale[i1:i2].unbind(0), row_offset[i1:i2].unbind(0), codes[i1:i2].unbind(0),
                   E1.unbind(0), U1.diagonal().tolist())
        for j, (w, s, o, c, err, u_jj) in enumerate(rows):
            torch.sub(w, o, out=c).div_(s).round_().clamp_(0, maxq)  # (d_out,) codes, as float
            torch.mul(s, c, out=err).add_(o)  # ŵ = s·c + o
            torch.sub(w, err, out=err).div_(u_jj)  # (w − ŵ) / U_jj
            W1[j:].addr_(U1[j, j:], err, alpha=-1)  # (B − j, d_out) -= U1[j, j:]ᵀ ⊗ err
        Wt[i2:].addmm_(U[i1:i2, i2:].T, E1, alpha=-1)  # (d_in − i2, d_out): the lazy block update
    return QuantizedMatrix(codes.T.contiguous().to(torch.uint8), scale.to(torch.float16), offset.to(torch.float16), bits, g)


def ldlq_quantize_e8p(W: Tensor, U: Tensor, group_size: int | None, bits: int = 2, block_size: int = 64) -> E8PMatrix:
    """BlockLDLQ codes of W on the E8P codebook (2 bpw; 3 and 4 with a residual stage), 8 columns at a time.

    Args:
      W: (d_out, d_in) float32 target, d_in a multiple of 8.
      U: (d_in, d_in) upper triangular, UᵀU = H_damped⁻¹ (`core.hessian.factor_hessian`).
      group_size: columns per fp16 scale (None: one per row); scales are fitted once on W (static).
      bits: 2 (E8P), 3 (E8P + E81B residual) or 4 (E8P + E8P residual), core.e8p_matrix.
      block_size: columns per lazy update, a multiple of 8.
    Returns:
      E8PMatrix with codes (d_out, d_in // 8) and its scales.
    """
    d_out, d_in = W.shape
    if block_size % e8p.DIM:
        raise ValueError(f"block_size={block_size} must be a multiple of {e8p.DIM} for the E8P codebook")
    g = e8p_group_size(d_in, group_size)
    scale = fit_scale(W, g, bits)  # (d_out, n_groups)
    col_scale = scale.repeat_interleave(g, dim=1)  # (d_out, d_in)
    U = U.to(torch.float32)
    Wk = W.float().clone()  # working copy receiving the error feedback
    codes = torch.empty(d_out, d_in // e8p.DIM, dtype=torch.int64, device=W.device)
    resid = None if bits == 2 else torch.empty_like(codes)
    for i1 in range(0, d_in, block_size):
        i2 = min(i1 + block_size, d_in)
        W1 = Wk[:, i1:i2].clone()  # (d_out, B)
        U1 = U[i1:i2, i1:i2]  # (B, B)
        E1 = torch.empty_like(W1)  # (d_out, B) scaled errors
        for j in range(0, i2 - i1, e8p.DIM):
            b = slice(j, j + e8p.DIM)
            s = col_scale[:, i1 + j : i1 + j + e8p.DIM]  # (d_out, 8)
            c, r = encode_vectors(W1[:, b], s, bits)  # (d_out, 1) each
            codes[:, (i1 + j) // e8p.DIM] = c[:, 0]
            if resid is not None:
                resid[:, (i1 + j) // e8p.DIM] = r[:, 0]
            delta = W1[:, b] - decode_vectors(c[:, 0], None if r is None else r[:, 0], bits) * s  # (d_out, 8)
            err = torch.linalg.solve_triangular(U1[b, b], delta, upper=True, left=False)  # Δ·U_BB⁻¹
            W1[:, j + e8p.DIM :] -= err @ U1[b, j + e8p.DIM :]  # (d_out, B − j − 8)
            E1[:, b] = err
        Wk[:, i2:] -= E1 @ U[i1:i2, i2:]  # (d_out, d_in − i2): the lazy block update
    return E8PMatrix(codes, scale.to(torch.float16), g, bits, resid)
