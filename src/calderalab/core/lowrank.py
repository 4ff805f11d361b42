"""Low-precision low-rank factors (LPLR) under a Hessian-weighted loss. Imports torch only.

Objective (CALDERA paper §3, eq. for the L/R update):  ‖(A − L·R)·H^½‖_F² = tr((A − LR) H (A − LR)ᵀ)
for A (d_out, d_in), L (d_out, k), R (k, d_in), H (d_in, d_in) positive definite (damped).

  * exact minimiser over all rank-k products: with A·H^½ = U S Vᵀ,  L = U_k S_k^½ and
    R = S_k^½ V_kᵀ H^-½  (Eckart–Young in the H^½-weighted norm; the √S split keeps both factors
    on a similar scale, which matters once they are quantised);
  * closed-form steps: for fixed L the weighting cancels, R = (LᵀL)⁻¹LᵀA; for fixed R,
    L = A H Rᵀ (R H Rᵀ)⁻¹. Each is an exact minimiser, so neither can increase the loss.
Factors are quantised to `lr_bits` with one fp16 scale + offset per rank component (per column of
L, per row of R): 2·32·k bits in all, counted in `core.bpw`. Rounding can raise the loss, so `lplr`
keeps the best quantised pair it has seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from calderalab.core.quantize import QuantizedMatrix, quantize_rtn

_RIDGE = 1e-7  # relative ridge so a rank-deficient (e.g. all-zero quantised) factor cannot make a solve singular


@dataclass(frozen=True)
class HessianFactors:
    """Damped H and its square roots, float32, from one float64 eigendecomposition.

    H, sqrt, inv_sqrt: (d_in, d_in).
    """

    H: Tensor
    sqrt: Tensor
    inv_sqrt: Tensor

    @classmethod
    def from_damped(cls, Hd: Tensor) -> "HessianFactors":
        """Hd: (d_in, d_in) symmetric positive definite (already damped)."""
        evals, evecs = torch.linalg.eigh(Hd.to(torch.float64))  # (d_in,), (d_in, d_in)
        evals = evals.clamp_min(evals.max() * 1e-12)
        sqrt = (evecs * evals.sqrt()) @ evecs.T  # (d_in, d_in)
        inv_sqrt = (evecs * evals.rsqrt()) @ evecs.T  # (d_in, d_in)
        return cls(Hd.float(), sqrt.float(), inv_sqrt.float())


def weighted_loss(A: Tensor, A_hat: Tensor, H: Tensor) -> float:
    """tr((A − Â) H (A − Â)ᵀ) in float64. A, Â: (d_out, d_in); H: (d_in, d_in)."""
    D = (A - A_hat).double()  # (d_out, d_in)
    return float(((D @ H.double()) * D).sum())


def exact_lowrank(A: Tensor, hf: HessianFactors, k: int) -> tuple[Tensor, Tensor]:
    """Rank-k minimiser of ‖(A − LR)H^½‖_F. A: (d_out, d_in) → L (d_out, k), R (k, d_in), float32."""
    M = A.float() @ hf.sqrt  # (d_out, d_in)
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)  # (d_out, r), (r,), (r, d_in)
    root = S[:k].sqrt()  # (k,)
    L = U[:, :k] * root  # (d_out, k)
    R = (root[:, None] * Vh[:k]) @ hf.inv_sqrt  # (k, d_in)
    return L, R


def _ridge_solve(G: Tensor, B: Tensor) -> Tensor:
    """X with (G + εI)·X = B in float64; G: (k, k) symmetric PSD, B: (k, m)."""
    G = G.double()
    eps = _RIDGE * float(G.diagonal().mean().clamp_min(1e-30))
    eye = torch.eye(G.shape[0], dtype=torch.float64, device=G.device)
    return torch.linalg.solve(G + eps * eye, B.double())


def solve_R(A: Tensor, L: Tensor) -> Tensor:
    """argmin_R ‖(A − LR)H^½‖_F = (LᵀL)⁻¹LᵀA (independent of H). A: (d_out, d_in), L: (d_out, k) → (k, d_in)."""
    return _ridge_solve(L.T @ L, L.T @ A).float()


def solve_L(AH: Tensor, R: Tensor, H: Tensor) -> Tensor:
    """argmin_L ‖(A − LR)H^½‖_F = A H Rᵀ (R H Rᵀ)⁻¹.

    Args:
      AH: (d_out, d_in) the product A·H (precomputed: it does not change across inner rounds).
      R: (k, d_in); H: (d_in, d_in).
    Returns: L (d_out, k).
    """
    G = R @ H @ R.T  # (k, k)
    return _ridge_solve(G, R @ AH.T).T.float()  # (d_out, k)


@dataclass(frozen=True)
class LowRankFactors:
    """Quantised factors: Lt holds Lᵀ (k, d_out) so its per-row grid is per rank component; R (k, d_in)."""

    Lt: QuantizedMatrix
    R: QuantizedMatrix

    def product(self) -> Tensor:
        """L·R (d_out, d_in) float32."""
        return self.Lt.dequantize().T @ self.R.dequantize()


def lplr(A: Tensor, hf: HessianFactors, k: int, lr_bits: int, inner_iters: int) -> LowRankFactors:
    """Quantised rank-k factors of A: exact SVD start, then `inner_iters` rounds of R-step, L-step.

    Each step solves its least-squares problem against the other factor *as quantised*, then
    quantises its own result. Returns the pair with the smallest weighted loss seen.
    A: (d_out, d_in) float32.
    """
    L, R = exact_lowrank(A, hf, k)
    best = LowRankFactors(quantize_rtn(L.T, lr_bits, None), quantize_rtn(R, lr_bits, None))
    best_loss = weighted_loss(A, best.product(), hf.H)
    AH = A @ hf.H  # (d_out, d_in)
    Lq = best.Lt
    for _ in range(inner_iters):
        Rq = quantize_rtn(solve_R(A, Lq.dequantize().T), lr_bits, None)
        Lq = quantize_rtn(solve_L(AH, Rq.dequantize(), hf.H).T, lr_bits, None)
        pair = LowRankFactors(Lq, Rq)
        loss = weighted_loss(A, pair.product(), hf.H)
        if loss < best_loss:
            best, best_loss = pair, loss
    return best
