"""Damping and factorisation of a layer Hessian H = XᵀX/n. Imports torch and calderalab.errors.

Owns `DampedHessian`: H_d = H / mean(diag H) + λ·I (a new tensor; the caller's H is never
touched), its lower Cholesky factor C (H_d = C·Cᵀ, used by the low-rank step: ‖M·H_d^½‖_F = ‖M·C‖_F
for any M, because C = H_d^½·O with O orthogonal) and the upper Cholesky factor U of H_d⁻¹
(UᵀU = H_d⁻¹, used by LDLQ). Factorisations run in float64 and are stored in float32.
Dividing by the mean diagonal makes λ scale-free (the paper's 0.01) and changes no minimiser.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from calderalab.errors import CompressionError

_MAX_DAMP_TRIES = 3  # λ, 10·λ, 100·λ (0.01 → 1: H/mean diag is then at most half the damped matrix)


@dataclass(frozen=True)
class DampedHessian:
    """H: (d_in, d_in) damped Hessian; chol: lower C with H = CCᵀ; inv_chol_upper: U with UᵀU = H⁻¹;
    damp: the λ that succeeded (≥ the requested one)."""

    H: Tensor
    chol: Tensor
    inv_chol_upper: Tensor
    damp: float


def damped_hessian(H: Tensor, damp: float) -> Tensor:
    """H / mean(diag H) + damp·I as a new float64 tensor, symmetrised.

    Built in place in its one float64 buffer (d_in² · 8 bytes: 512 MiB at d_in = 8192), so the
    peak is that buffer plus the caller's H; the values equal the out-of-place formula bit for bit.

    Args:
      H: (d_in, d_in), symmetric positive semi-definite with mean(diag H) > 0.
    """
    Hd = H.to(torch.float64, copy=True)  # (d_in, d_in)
    Hd += H.T  # cast element by element: removes float asymmetry from streamed accumulation
    Hd *= 0.5
    mean_diag = Hd.diagonal().mean()
    if not mean_diag > 0:
        raise ValueError(f"Hessian has mean diagonal {float(mean_diag)}; it must be positive")
    Hd /= mean_diag
    Hd.diagonal().add_(damp)
    return Hd


def factor_hessian(H: Tensor, damp: float) -> DampedHessian:
    """Damp and factorise H (d_in, d_in), raising λ tenfold on Cholesky failure.

    Raises CompressionError when the largest λ tried still fails (a non-PSD or broken H).
    """
    lam = damp
    for _ in range(_MAX_DAMP_TRIES):
        Hd = damped_hessian(H, lam)
        C, info = torch.linalg.cholesky_ex(Hd)  # (d_in, d_in) lower
        if int(info) == 0:
            Hd = Hd.float()  # each float64 matrix is released once its float32 copy exists (peak 3 float64)
            inverse = torch.cholesky_inverse(C)  # (d_in, d_in) H_d⁻¹
            C = C.float()
            U, info = torch.linalg.cholesky_ex(inverse, upper=True)  # (d_in, d_in)
            del inverse
            if int(info) == 0 and torch.isfinite(U).all():
                return DampedHessian(Hd, C, U.float(), lam)
        lam *= 10.0
    raise CompressionError(
        f"cholesky of the damped Hessian failed up to damp={lam / 10:g}; the Hessian is not positive semi-definite"
    )
