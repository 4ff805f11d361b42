"""Low-precision low-rank factors (LPLR) under a Hessian-weighted loss. Imports torch only.

Objective (CALDERA paper §3, eq. for the L/R update):  ‖(A − L·R)·H^½‖_F² = tr((A − LR) H (A − LR)ᵀ)
for A (d_out, d_in), L (d_out, k), R (k, d_in), H (d_in, d_in) positive definite (damped).

  * exact minimiser over all rank-k products: with H = CCᵀ and A·C = U S Vᵀ,  L = U_k S_k^½ and
    R = S_k^½ V_kᵀ C⁻¹  (Eckart–Young in the H-weighted norm; the √S split keeps both factors
    on a similar scale, which matters once they are quantised);
  * closed-form steps: for fixed L the weighting cancels, R = (LᵀL)⁻¹LᵀA; for fixed R,
    L = A H Rᵀ (R H Rᵀ)⁻¹. Each is an exact minimiser, so neither can increase the loss.
Factors are quantised to `lr_bits` with one fp16 scale + offset per rank component (per column of
L, per row of R): 2·32·k bits in all, counted in `core.bpw`. The grids are MSE-clipped
(`fit_grid(clip_search=True)`): at 2–3 bits a min–max grid let the CALDERA error drift upwards
over outer iterations on the seeded test problem. Rounding can raise the loss, so `lplr`
keeps the best quantised pair it has seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from calderalab.core.hessian import DampedHessian
from calderalab.core.quantize import QuantizedMatrix, quantize_rtn

_RIDGE = 1e-7  # relative ridge so a rank-deficient (e.g. all-zero quantised) factor cannot make a solve singular


def weighted_loss(A: Tensor, A_hat: Tensor, H: Tensor) -> float:
    """tr((A − Â) H (A − Â)ᵀ), float32 matmul, float64 sum. A, Â: (d_out, d_in); H: (d_in, d_in)."""
    D = (A - A_hat).float()  # (d_out, d_in)
    return float(((D @ H.float()) * D).sum(dtype=torch.float64))


RSVD_OVERSAMPLE = 16  # extra columns of the randomized range finder (Halko et al. suggest 5-20)
RSVD_POWER_ITERS = 2  # subspace iterations: SmolLM2's (W − Q)·C spectra decay slowly
RSVD_SEED = 0  # the test matrix Ω is fixed: same input, same factors


def randomized_svd(M: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k SVD of M (m, n) by a seeded randomized range finder with subspace iteration (Halko,
    Martinsson & Tropp 2011, Alg. 4.4): U (m, k), S (k,), Vh (k, n). Exact (a full SVD) when k plus the
    oversampling reaches min(m, n), where sketching would save nothing."""
    m, n = M.shape
    width = k + RSVD_OVERSAMPLE
    if width >= min(m, n):
        U, S, Vh = torch.linalg.svd(M, full_matrices=False)
        return U[:, :k], S[:k], Vh[:k]
    gen = torch.Generator(device=M.device).manual_seed(RSVD_SEED)
    omega = torch.randn(n, width, generator=gen, dtype=M.dtype, device=M.device)  # (n, width)
    Y, _ = torch.linalg.qr(M @ omega)  # (m, width): an orthonormal basis of M's sampled range
    for _ in range(RSVD_POWER_ITERS):  # re-orthonormalised each half-step (Alg. 4.4), or roundoff kills the tail
        Z, _ = torch.linalg.qr(M.T @ Y)  # (n, width)
        Y, _ = torch.linalg.qr(M @ Z)  # (m, width)
    Ub, S, Vh = torch.linalg.svd(Y.T @ M, full_matrices=False)  # (width, width), (width,), (width, n)
    return (Y @ Ub)[:, :k], S[:k], Vh[:k]


def exact_lowrank(A: Tensor, hd: DampedHessian, k: int, svd: str = "exact") -> tuple[Tensor, Tensor]:
    """Rank-k minimiser of ‖(A − LR)H^½‖_F. A: (d_out, d_in) → L (d_out, k), R (k, d_in), float32.

    With H = C·Cᵀ (Cholesky), ‖M·H^½‖_F = ‖M·C‖_F, so if A·C = U S Vᵀ the minimiser is
    L·R·C = U_k S_k V_kᵀ, i.e. L = U_k S_k^½ and R = S_k^½ V_kᵀ C⁻¹ (a triangular solve; a
    Cholesky is ~10× cheaper than the eigendecomposition H^½ would need). svd="randomized" takes the
    top k from `randomized_svd` instead: near, not at, the minimiser (CompressionSpec.svd).
    """
    M = A.float() @ hd.chol  # (d_out, d_in)
    if svd == "randomized":
        U, S, Vh = randomized_svd(M, k)  # (d_out, k), (k,), (k, d_in)
    else:
        U, S, Vh = torch.linalg.svd(M, full_matrices=False)  # (d_out, r), (r,), (r, d_in)
    root = S[:k].sqrt()  # (k,)
    L = U[:, :k] * root  # (d_out, k)
    R = torch.linalg.solve_triangular(hd.chol, root[:, None] * Vh[:k], upper=False, left=False)  # (k, d_in)
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


@dataclass(frozen=True)
class DenseFactors:
    """A 16-bit part of the rank, kept beside the quantised factors (recovery tuning adds it; `decompose`
    never does): Lt (k16, d_out) and R (k16, d_in), both float16, stored as they are (16 bits per entry)."""

    Lt: Tensor
    R: Tensor

    def __post_init__(self) -> None:
        if self.Lt.dtype != torch.float16 or self.R.dtype != torch.float16:
            raise ValueError(f"dense factors must be float16, got {self.Lt.dtype} and {self.R.dtype}")
        if self.Lt.dim() != 2 or self.R.dim() != 2 or self.Lt.shape[0] != self.R.shape[0] or self.Lt.shape[0] < 1:
            raise ValueError(f"dense factors Lt {tuple(self.Lt.shape)} and R {tuple(self.R.shape)} need the same rank >= 1")

    @property
    def rank(self) -> int:
        return self.R.shape[0]

    def product(self) -> Tensor:
        """L16·R16 (d_out, d_in) float32."""
        return self.Lt.float().T @ self.R.float()


def _quantize(F: Tensor, lr_bits: int) -> QuantizedMatrix:
    """One grid per row of F (k, ·): per rank component."""
    return quantize_rtn(F, lr_bits, None, clip_search=True)


def _loss_up_to_constant(AH: Tensor, H: Tensor):
    """f(factors) = tr((A − LR)H(A − LR)ᵀ) − tr(AHAᵀ) = ⟨LᵀL, RHRᵀ⟩ − 2⟨L, AHRᵀ⟩, in float64.

    Ranks candidate factors as `weighted_loss` does (the constant cancels) without forming the
    (d_out, d_in) residual or its (d_out·d_in·d_in) product with H: O(d·d_in·k) work.
    AH: (d_out, d_in) A·H; H: (d_in, d_in), both float64.
    """

    def f(factors: LowRankFactors) -> float:
        L = factors.Lt.dequantize().T.double()  # (d_out, k)
        R = factors.R.dequantize().double()  # (k, d_in)
        return float(((L.T @ L) * (R @ H @ R.T)).sum() - 2 * (L * (AH @ R.T)).sum())

    return f


def lplr(A: Tensor, hd: DampedHessian, k: int, lr_bits: int, inner_iters: int, svd: str = "exact") -> LowRankFactors:
    """Quantised rank-k factors of A: an SVD start (`svd`: "exact" or "randomized"), then `inner_iters`
    rounds of R-step, L-step.

    Each step solves its least-squares problem against the other factor *as quantised*, then
    quantises its own result. Returns the pair with the smallest weighted loss seen.
    A: (d_out, d_in) float32.
    """
    L, R = exact_lowrank(A, hd, k, svd)
    AH = A @ hd.H  # (d_out, d_in)
    loss = _loss_up_to_constant(AH.double(), hd.H.double())
    best = LowRankFactors(_quantize(L.T, lr_bits), _quantize(R, lr_bits))
    best_loss = loss(best)
    Lq = best.Lt
    for _ in range(inner_iters):
        Rq = _quantize(solve_R(A, Lq.dequantize().T), lr_bits)
        Lq = _quantize(solve_L(AH, Rq.dequantize(), hd.H).T, lr_bits)
        pair = LowRankFactors(Lq, Rq)
        pair_loss = loss(pair)
        if pair_loss < best_loss:
            best, best_loss = pair, pair_loss
    return best
