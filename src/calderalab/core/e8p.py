"""The E8P lattice codebook of QuIP# (Tseng et al., ICML 2024, §4.2): 2 bits per weight, 8 at a time.

Imports torch only.

Construction (as lib/codebook/latticee8_padded12.py of Cornell-RelaxML/quip-sharp builds it):
  D8^ = {x ∈ (Z + ½)^8 : Σx even}, the odd coset of E8 = D8 ∪ D8^.
  A   = 256 "absolute patterns" a ∈ (Z_{≥0} + ½)^8: the 227 distinct |x| of x ∈ D8^ with ‖x‖² ≤ 10,
        plus 29 chosen patterns of norm 12 (five 3/2 and three 1/2) that pad the set to 2^8.
  S   = {a ⊙ s : a ∈ A, s ∈ {±1}^8, a ⊙ s ∈ D8^}: for each a exactly half of the sign vectors keep
        Σ even (flipping one sign changes Σ by the odd integer 2a_i), so |S| = 256 · 128 = 2^15.
  E8P = (S + ¼·1) ∪ (S − ¼·1), 2^16 points, a subset of E8 + ¼·1 (½·1 ∈ E8), symmetric under x ↦ −x.

Code layout (16 bits, ours; QuIP#'s bit order serves its CUDA kernel):
  bit 15: the shift (0: +¼, 1: −¼); bits 7..14: index of a in A; bits 0..6: the signs of
  coordinates 0..6 (1 = negative). The sign of coordinate 7 follows from the parity rule
  #negatives ≡ Σa (mod 2), which is what keeps a ⊙ s in D8^ (Σ(a⊙s) = Σa − 2Σ_{neg} a_i).

Nearest codeword (`nearest_codes`) is exact without scanning 2^16 points: for a target y (after
removing the ±¼ shift) and one pattern a, the best sign vector is sign(y) if its parity is the
allowed one, else sign(y) with the coordinate of smallest a_i|y_i| flipped. So
    ‖y − a⊙s*‖² = ‖y‖² + ‖a‖² − 2(⟨|y|, a⟩ − 2·[parity mismatch]·min_i a_i|y_i|),
With the flip folded into the candidates (≤ 256·8 per parity of y, half of them valid), the search
is one (N, 9) @ (9, ~1150) matmul and an argmin per shift, instead of (N, 8) @ (8, 65536).

Residual stages (QuIP#'s E8P12RVQ3B / E8P12RVQ4B, lib/codebook/latticee8_padded12_rvq{3,4}bit.py):
3 and 4 bits per weight quantise x with E8P, then the residual scaled by RESID_SCALE[bits] with a
second codebook, and decode as e8p(c₁) + second(c₂) / RESID_SCALE: at 4 bits the second codebook is
E8P again (16 more bits per 8 weights), at 3 bits it is E81B (`e81b_codebook`, 8 more bits), the 256
points of E8 of smallest norm (0, the 112 + 128 points of norm² 2, and 15 of the 16 points ±2·e_i).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

DIM = 8  # coordinates per codeword
CODE_BITS = 16  # bits per codeword: 2 bits per weight
N_CODES = 2**CODE_BITS
_SHIFT = 0.25
RESID_SCALE = {3: 2.04, 4: 3.45}  # bits -> the residual's scale before its second codebook (QuIP#'s opt_resid_scale)
RESID_BITS = {3: 8, 4: 16}  # bits -> bits of the residual code per 8 weights

# The 29 norm-12 patterns QuIP# adds to the 227 of D8^ ∩ {‖x‖² ≤ 10} (units of ½), copied from
# get_norm12() in quip-sharp so the codebook is theirs point for point.
_NORM12_HALVES = (
    (3, 1, 1, 1, 3, 3, 3, 3), (1, 3, 1, 1, 3, 3, 3, 3), (1, 1, 3, 1, 3, 3, 3, 3), (1, 1, 1, 3, 3, 3, 3, 3),
    (3, 3, 3, 1, 3, 3, 1, 1), (3, 3, 3, 1, 3, 1, 3, 1), (3, 3, 3, 1, 1, 3, 3, 1), (3, 3, 3, 1, 3, 1, 1, 3),
    (3, 3, 3, 1, 1, 3, 1, 3), (3, 3, 3, 1, 1, 1, 3, 3), (3, 3, 1, 3, 3, 3, 1, 1), (3, 3, 1, 3, 3, 1, 3, 1),
    (3, 3, 1, 3, 1, 3, 3, 1), (3, 3, 1, 3, 3, 1, 1, 3), (3, 3, 1, 3, 1, 3, 1, 3), (3, 3, 1, 3, 1, 1, 3, 3),
    (3, 1, 3, 3, 3, 3, 1, 1), (3, 1, 3, 3, 3, 1, 3, 1), (3, 1, 3, 3, 1, 3, 3, 1), (3, 1, 3, 3, 3, 1, 1, 3),
    (3, 1, 3, 3, 1, 3, 1, 3), (1, 3, 3, 3, 1, 1, 3, 3), (1, 3, 3, 3, 3, 3, 1, 1), (1, 3, 3, 3, 3, 1, 3, 1),
    (1, 3, 3, 3, 1, 3, 3, 1), (1, 3, 3, 3, 3, 1, 1, 3), (1, 3, 3, 3, 1, 3, 1, 3), (1, 1, 3, 3, 1, 3, 3, 3),
    (3, 3, 1, 1, 3, 3, 3, 1),
)


@lru_cache(maxsize=1)
def abs_patterns() -> Tensor:
    """A: (256, 8) float32, every entry a positive half-integer; rows 0..226 sorted, then the norm-12 rows.

    |x| of x ∈ D8^ with ‖x‖² ≤ 10 has entries in {½, 3/2, 5/2} (7/2 alone exceeds 10), and every
    such vector is one (a sign flip fixes the parity of Σ), so the 227 are enumerated over 3^8.
    """
    halves = torch.cartesian_prod(*[torch.tensor([1, 3, 5])] * DIM)  # (3^8, 8): 2|x|, lexicographic
    small = halves[halves.pow(2).sum(dim=1) <= 40]  # (227, 8): ‖x‖² ≤ 10
    large = torch.tensor(_NORM12_HALVES)  # (29, 8)
    return (torch.cat([small, large]).float() / 2).contiguous()


@lru_cache(maxsize=1)
def _neg_parity() -> Tensor:
    """(256,) int64: the parity of #negative signs that keeps a ⊙ s in D8^, Σa mod 2."""
    return (abs_patterns().sum(dim=1).round().long() % 2)


@lru_cache(maxsize=1)
def codebook() -> Tensor:
    """All 2^16 codewords, row c decoding code c (see the module docstring): (65536, 8) float32."""
    c = torch.arange(N_CODES)
    neg = (c[:, None] >> torch.arange(DIM - 1)) & 1  # (65536, 7) sign bits of coordinates 0..6
    a_idx = (c >> (DIM - 1)) & 255  # (65536,)
    last = (neg.sum(dim=1) + _neg_parity()[a_idx]) % 2  # (65536,) the parity-implied eighth sign
    signs = 1 - 2 * torch.cat([neg, last[:, None]], dim=1).float()  # (65536, 8)
    shift = _SHIFT - 2 * _SHIFT * (c >> 15).float()  # (65536,)
    return (abs_patterns()[a_idx] * signs + shift[:, None]).contiguous()


def decode(codes: Tensor) -> Tensor:
    """Codewords of integer codes: (...,) → (..., 8) float32."""
    return codebook().to(codes.device)[codes.long()]


@lru_cache(maxsize=2)
def _candidates(parity: int) -> tuple[Tensor, Tensor, Tensor]:
    """The sign-folded candidates for targets whose count of negative coordinates has this parity.

    For |y| (all coordinates ≥ 0) and pattern a, the best allowed sign vector relative to sign(y) is
    "no flip" when the parities agree, else one flipped coordinate. Returns
      T: (K, 9) rows [−2·a⊙f, ‖a‖²], so [|y|, 1] @ Tᵀ = ‖y − a⊙f‖² − ‖y‖²;
      pattern: (K,) int64 index of a;  flip: (K,) int64 flipped coordinate, DIM for none.
    """
    A, match = abs_patterns(), _neg_parity() == parity  # (256, 8), (256,)
    flips = torch.cat([torch.full((1,), DIM), torch.arange(DIM)])  # none, then each coordinate
    rows, pattern, flip = [], [], []
    for f in flips.tolist():
        keep = match if f == DIM else ~match  # (256,)
        signs = torch.ones(DIM)
        if f < DIM:
            signs[f] = -1.0
        rows.append(A[keep] * signs)
        pattern.append(torch.nonzero(keep).squeeze(1))
        flip.append(torch.full((int(keep.sum()),), f))
    T = torch.cat(rows)  # (K, 8)
    T = torch.cat([-2 * T, T.pow(2).sum(dim=1, keepdim=True)], dim=1)  # (K, 9)
    return T.contiguous(), torch.cat(pattern), torch.cat(flip)


def _best_in_shell(Y: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest point of S to each row of Y, as (squared distance (N,), code without shift bit (N,) int64).

    Y: (N, 8) float32.
    """
    absY, neg = Y.abs(), (Y < 0).long()  # (N, 8)
    aug = torch.cat([absY, torch.ones_like(absY[:, :1])], dim=1)  # (N, 9)
    parity = neg.sum(dim=1) % 2  # (N,)
    dist = Y.pow(2).sum(dim=1)  # (N,) ‖y‖², completed below
    a_idx = torch.empty_like(parity)
    flip = torch.empty_like(parity)
    for q in (0, 1):
        rows = torch.nonzero(parity == q).squeeze(1)  # (n_q,)
        T, pattern, flips = (t.to(Y.device) for t in _candidates(q))
        best_d, best = (aug[rows] @ T.T).min(dim=1)  # (n_q,)
        dist[rows] += best_d
        a_idx[rows], flip[rows] = pattern[best], flips[best]
    onehot = torch.nn.functional.one_hot(flip, DIM + 1)[:, :DIM]  # (N, 8); DIM (no flip) drops out
    neg = neg ^ onehot
    sign_bits = (neg[:, : DIM - 1] << torch.arange(DIM - 1, device=Y.device)).sum(dim=1)  # (N,)
    return dist, (a_idx << (DIM - 1)) | sign_bits


def nearest_codes(X: Tensor, chunk: int = 8192) -> Tensor:
    """Exact nearest E8P codeword of every 8-vector (any one of the nearest on a tie).

    Args:
      X: (N, 8) float32 (other float dtypes are cast).
      chunk: rows per step, bounding the (chunk, 256, 8) intermediate.
    Returns:
      (N,) int64 codes in [0, 2^16); decode(codes) is the nearest codeword.
    """
    if X.dim() != 2 or X.shape[1] != DIM:
        raise ValueError(f"X must be (N, {DIM}), got {tuple(X.shape)}")
    X = X.float()
    out = torch.empty(X.shape[0], dtype=torch.int64, device=X.device)
    for i in range(0, X.shape[0], chunk):
        x = X[i : i + chunk]  # (n, 8)
        d_plus, c_plus = _best_in_shell(x - _SHIFT)
        d_minus, c_minus = _best_in_shell(x + _SHIFT)
        out[i : i + chunk] = torch.where(d_minus < d_plus, c_minus | (1 << 15), c_plus)
    return out


@lru_cache(maxsize=1)
def e81b_codebook() -> Tensor:
    """E81B, the 1-bit E8 codebook of QuIP#'s 3-bit residual stage: (256, 8) float32.

    The E8 points (D8 ∪ D8^) with ‖x‖² ≤ 2 (0, the 112 integer and 128 half-integer roots), then
    ±2·e_i for every i except −2·e_8, which pads the set to 2^8: code c decodes to row c.
    """
    ints = torch.cartesian_prod(*[torch.arange(-1, 2)] * DIM).float()  # (3^8, 8)
    halves = torch.cartesian_prod(*[torch.tensor([-0.5, 0.5])] * DIM)  # (2^8, 8)
    e8 = torch.cat([ints, halves])
    keep = (e8.sum(dim=1).remainder(2) == 0) & (e8.pow(2).sum(dim=1) <= 2)
    axes = torch.cat([2 * torch.eye(DIM), -2 * torch.eye(DIM)[: DIM - 1]])  # (15, 8)
    return torch.cat([e8[keep], axes]).contiguous()


def nearest_e81b(X: Tensor, chunk: int = 8192) -> Tensor:
    """Nearest E81B codeword of every 8-vector: X (N, 8) → (N,) int64 codes in [0, 256)."""
    if X.dim() != 2 or X.shape[1] != DIM:
        raise ValueError(f"X must be (N, {DIM}), got {tuple(X.shape)}")
    C = e81b_codebook().to(X.device)  # (256, 8)
    norms = C.pow(2).sum(dim=1)  # (256,)
    X = X.float()
    out = torch.empty(X.shape[0], dtype=torch.int64, device=X.device)
    for i in range(0, X.shape[0], chunk):
        out[i : i + chunk] = (2 * X[i : i + chunk] @ C.T - norms).argmax(dim=1)  # max ⟨x,c⟩ − ‖c‖²/2
    return out


def decode_e81b(codes: Tensor) -> Tensor:
    """E81B codewords of integer codes: (...,) → (..., 8) float32."""
    return e81b_codebook().to(codes.device)[codes.long()]
