"""Randomized Hadamard transforms for any dimension. Imports torch only.

The transform of x ∈ R^n is  x ↦ M·diag(s)·x,  s ∈ {±1}^n drawn from a seed, M orthogonal.

M is a Kronecker product of small orthonormal blocks M = B_1 ⊗ B_2 ⊗ … ⊗ B_t, applied block by
block along the axes of x reshaped to (f_1, …, f_t), so the cost is O(n·Σf_i), never an n×n matmul.
Blocks, found by `kron_factors(n)` for n = 2^a·m (m odd):
  * the odd part m is covered, when possible, by Paley Hadamard matrices of order 4d for divisors d
    of m (Paley I: 4d = q+1, q prime ≡ 3 mod 4; Paley II: 4d = 2(q+1), q prime ≡ 1 mod 4), each
    using two of the factors of 2 — e.g. 576 = 12·12·4, 896 = 28·32, 4864 = 76·64,
    29568 = 12·28·44·2. A Kronecker product of Hadamard matrices is Hadamard, so every entry of M
    is ±1/√n: the best possible incoherence.
  * otherwise (e.g. 11008 = 43·256: no Hadamard of order 172 from Paley) the odd part gets an
    orthonormal DCT-II block (entries ≤ √(2/m), deterministic everywhere);
  * the power-of-two rest is Sylvester blocks of at most 64.
All blocks are fixed functions of n; only the signs s depend on the seed.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

_MAX_POW2_BLOCK = 64
_MAX_PALEY_ORDER = 1024


def _is_prime(q: int) -> bool:
    if q < 2:
        return False
    return all(q % p for p in range(2, math.isqrt(q) + 1))


def _paley_kind(order: int) -> str | None:
    """'paley1' / 'paley2' if a Paley construction gives a Hadamard matrix of this order."""
    if order > _MAX_PALEY_ORDER or order % 4:
        return None
    if _is_prime(order - 1) and (order - 1) % 4 == 3:
        return "paley1"
    q = order // 2 - 1
    if _is_prime(q) and q % 4 == 1:
        return "paley2"
    return None


def _odd_blocks(m: int, twos: int) -> list[int] | None:
    """Paley orders 4d (d | m) whose product over their odd parts is m, using ≤ twos factors of 2."""
    if m == 1:
        return []
    for d in range(3, m + 1, 2):
        if m % d == 0 and twos >= 2 and _paley_kind(4 * d):
            rest = _odd_blocks(m // d, twos - 2)
            if rest is not None:
                return [4 * d] + rest
    return None


def _pow2_blocks(a: int) -> list[int]:
    step = int(math.log2(_MAX_POW2_BLOCK))
    blocks = [2**step] * (a // step)
    return blocks + ([2 ** (a % step)] if a % step else [])


@lru_cache(maxsize=None)
def kron_factors(n: int) -> tuple[tuple[str, int], ...]:
    """The blocks (kind, size) of M for dimension n; product of sizes == n."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"Hadamard dimension n={n!r} must be a positive integer")
    a = (n & -n).bit_length() - 1
    m = n >> a
    paley = _odd_blocks(m, a)
    if paley is not None:
        used = 2 * len(paley)
        out = [(_paley_kind(o) or "", o) for o in paley]
    else:
        used = 0
        out = [("dct", m)]
    out += [("sylvester", f) for f in _pow2_blocks(a - used)]
    return tuple((kind, size) for kind, size in out if size > 1)


def _legendre(x: int, q: int) -> int:
    x %= q
    if x == 0:
        return 0
    return 1 if pow(x, (q - 1) // 2, q) == 1 else -1


def _jacobsthal(q: int) -> Tensor:
    chi = torch.tensor([_legendre(x, q) for x in range(q)], dtype=torch.float64)  # (q,)
    idx = (torch.arange(q)[None, :] - torch.arange(q)[:, None]) % q  # (q, q): j − i mod q
    return chi[idx]


def _paley_matrix(kind: str, order: int) -> Tensor:
    """±1 Hadamard matrix (order, order), float64."""
    if kind == "paley1":
        q = order - 1
        S = torch.zeros(order, order, dtype=torch.float64)
        S[0, 1:], S[1:, 0], S[1:, 1:] = 1.0, -1.0, _jacobsthal(q)  # skew conference matrix
        return S + torch.eye(order, dtype=torch.float64)
    q = order // 2 - 1
    C = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    C[0, 1:], C[1:, 0], C[1:, 1:] = 1.0, 1.0, _jacobsthal(q)  # symmetric conference matrix
    plus = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    zero = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    return torch.kron(C, plus) + torch.kron(torch.eye(q + 1, dtype=torch.float64), zero)


def _sylvester(n: int) -> Tensor:
    H = torch.ones(1, 1, dtype=torch.float64)
    while H.shape[0] < n:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
    return H


def _dct(m: int) -> Tensor:
    """Orthonormal DCT-II matrix (m, m), float64."""
    k = torch.arange(m, dtype=torch.float64)[:, None]
    j = torch.arange(m, dtype=torch.float64)[None, :]
    D = torch.cos(math.pi * (j + 0.5) * k / m) * math.sqrt(2.0 / m)
    D[0] /= math.sqrt(2.0)
    return D


@lru_cache(maxsize=None)
def _block(kind: str, size: int) -> Tensor:
    """Orthonormal block (size, size), float64 (cached; callers never mutate it)."""
    if kind == "sylvester":
        B = _sylvester(size) / math.sqrt(size)
    elif kind == "dct":
        B = _dct(size)
    else:
        B = _paley_matrix(kind, size) / math.sqrt(size)
    eye = torch.eye(size, dtype=torch.float64)
    assert torch.allclose(B @ B.T, eye, atol=1e-10), f"{kind} block of order {size} is not orthogonal"
    return B


def random_signs(n: int, seed: int) -> Tensor:
    """(n,) float32 of ±1 from an explicit CPU generator: the same seed gives the same signs everywhere."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randint(0, 2, (n,), generator=gen, dtype=torch.int64).float() * 2 - 1


def _apply_blocks(x: Tensor, transpose: bool) -> Tensor:
    """M·x (or Mᵀ·x) along the last dim of x (..., n)."""
    n = x.shape[-1]
    lead = x.shape[:-1]
    y = x.reshape(-1, n)  # (batch, n)
    left = 1
    for kind, f in kron_factors(n):
        B = _block(kind, f).to(dtype=x.dtype, device=x.device)
        B = B.T if transpose else B
        right = n // (left * f)
        y = y.reshape(-1, left, f, right)  # (batch, left, f, right)
        y = torch.matmul(B, y) if right > 1 else torch.matmul(y[..., 0], B.T)[..., None]
        left *= f
    return y.reshape(*lead, n)


def rht(x: Tensor, seed: int, dim: int = -1) -> Tensor:
    """Randomized Hadamard transform M·diag(s)·x along `dim` of x. Returns a new tensor, same shape."""
    moved = x.movedim(dim, -1)  # (..., n)
    s = random_signs(moved.shape[-1], seed).to(dtype=x.dtype, device=x.device)
    return _apply_blocks(moved * s, transpose=False).movedim(-1, dim)


def inverse_rht(y: Tensor, seed: int, dim: int = -1) -> Tensor:
    """Inverse of `rht`: diag(s)·Mᵀ·y along `dim` (M orthogonal, s = s⁻¹)."""
    moved = y.movedim(dim, -1)  # (..., n)
    s = random_signs(moved.shape[-1], seed).to(dtype=y.dtype, device=y.device)
    return (_apply_blocks(moved, transpose=True) * s).movedim(-1, dim)
