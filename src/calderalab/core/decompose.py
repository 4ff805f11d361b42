"""The public entry point `decompose(W, H, spec) -> Decomposition`. Imports torch only.

Pipeline for every method:
  1. validate at the boundary (shapes, finiteness, rank, group size) with ValueErrors naming values;
  2. scale W to unit RMS (one float32 scalar, stored), so fp16 grids never overflow and
     errors are comparable across modules;
  3. if spec.hadamard: W ← U·W·Vᵀ and H ← V·H·Vᵀ with U, V random-sign Hadamard transforms
     (seeds 2·seed and 2·seed+1); relative errors are invariant under this change of basis;
  4. rtn: round to nearest; ldlq: LDLQ; caldera: the alternating solver (core.caldera); with
     spec.codebook == "e8p" every rounding of Q is onto the E8P lattice codebook instead of the grid.
Math runs in float32, Hessian factorisations in float64; W and H are never mutated.
"""

from __future__ import annotations

import torch
from torch import Tensor

from calderalab.core.caldera import SolveResult, caldera_solve, ldlq_solve
from calderalab.core.decomposition import Decomposition
from calderalab.core.e8p_matrix import e8p_group_size, quantize_e8p
from calderalab.core.hadamard import rht
from calderalab.core.metrics import relative_error
from calderalab.core.quantize import effective_group_size, quantize_rtn
from calderalab.core.spec import CompressionSpec


def rotation_seeds(spec: CompressionSpec) -> tuple[int, int] | None:
    """(seed of the d_out side, seed of the d_in side), distinct even when d_out == d_in."""
    return (2 * spec.seed, 2 * spec.seed + 1) if spec.hadamard else None


def _validate(W: Tensor, H: Tensor | None, spec: CompressionSpec) -> None:
    if not isinstance(spec, CompressionSpec):
        raise TypeError(f"spec must be a CompressionSpec, got {type(spec).__name__}")
    if not isinstance(W, Tensor) or W.dim() != 2 or not W.dtype.is_floating_point:
        raise ValueError(f"W must be a 2-D floating tensor (d_out, d_in), got {getattr(W, 'shape', type(W))}")
    d_out, d_in = W.shape
    if d_out == 0 or d_in == 0:
        raise ValueError(f"W has an empty shape {tuple(W.shape)}")
    if not torch.isfinite(W).all():
        raise ValueError(f"W {tuple(W.shape)} contains {int((~torch.isfinite(W)).sum())} non-finite entries")
    if spec.rank > min(d_out, d_in):
        raise ValueError(f"rank={spec.rank} exceeds min(d_out, d_in) = {min(d_out, d_in)} for W {tuple(W.shape)}")
    effective_group_size(d_in, spec.group_size)
    if spec.codebook == "e8p":
        e8p_group_size(d_in, spec.group_size)
    if H is None:
        if spec.method != "rtn":
            raise ValueError(f"method={spec.method!r} needs a Hessian H (d_in, d_in) = ({d_in}, {d_in}); only rtn takes None")
        return
    if not isinstance(H, Tensor) or H.shape != (d_in, d_in):
        raise ValueError(f"H {tuple(getattr(H, 'shape', ()))} must be (d_in, d_in) = ({d_in}, {d_in}) for W {tuple(W.shape)}")
    if not torch.isfinite(H).all():
        raise ValueError(f"H {tuple(H.shape)} contains {int((~torch.isfinite(H)).sum())} non-finite entries")
    if not float(H.diagonal().double().mean()) > 0:
        raise ValueError(f"H has mean diagonal {float(H.diagonal().double().mean())}; a Hessian XᵀX/n needs a positive one")


def _rotate(W: Tensor, H: Tensor | None, seeds: tuple[int, int] | None) -> tuple[Tensor, Tensor | None]:
    """(U·W·Vᵀ, V·H·Vᵀ): W (d_out, d_in), H (d_in, d_in), both float32 (H is factorised later in float64)."""
    H32 = None if H is None else H.to(torch.float32)
    if seeds is None:
        return W, H32
    s_out, s_in = seeds
    Wr = rht(rht(W, s_in, dim=1), s_out, dim=0)  # (d_out, d_in)
    Hr = None if H32 is None else rht(rht(H32, s_in, dim=0), s_in, dim=1)  # (d_in, d_in)
    return Wr, Hr


def decompose(W: Tensor, H: Tensor | None, spec: CompressionSpec) -> Decomposition:
    """Compress one weight matrix.

    Args:
      W: (d_out, d_in) weight, any float dtype.
      H: (d_in, d_in) Hessian XᵀX/n of the module's inputs; None allowed for rtn only
        (its `errors` are then relative Frobenius errors, i.e. H = I).
      spec: the CompressionSpec.
    Returns:
      A frozen Decomposition; same (W, H, spec) → bit-identical result.
    """
    _validate(W, H, spec)
    W32 = W.detach().to(torch.float32)
    rms = float(W32.pow(2).mean().sqrt())
    w_scale = float(torch.tensor(rms if rms > 0 else 1.0, dtype=torch.float32))  # stored as float32
    seeds = rotation_seeds(spec)
    Wr, Hr = _rotate(W32 / w_scale, None if H is None else H.detach(), seeds)
    if spec.method == "rtn":
        Q = quantize_e8p(Wr, spec.group_size, spec.bits) if spec.codebook == "e8p" else quantize_rtn(Wr, spec.bits, spec.group_size)
        result = SolveResult(Q, None, (relative_error(Wr, Q.dequantize(), Hr),), 0)
    elif spec.method == "ldlq":
        result = ldlq_solve(Wr, Hr, spec.bits, spec.group_size, spec.damp, spec.codebook)
    else:
        result = caldera_solve(
            Wr, Hr, bits=spec.bits, rank=spec.rank, lr_bits=spec.lr_bits, group_size=spec.group_size,
            outer_iters=spec.outer_iters, inner_iters=spec.inner_iters, damp=spec.damp, codebook=spec.codebook,
            svd=spec.svd,
        )
    return Decomposition(
        spec=spec, shape=(W.shape[0], W.shape[1]), w_scale=w_scale, rotation_seeds=seeds,
        Q=result.Q, factors=result.factors, errors=result.errors, best_iter=result.best_iter,
    )
