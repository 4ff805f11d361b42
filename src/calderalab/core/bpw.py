"""Bits per weight, counted honestly and by the paper's convention. Imports torch only.

Honest count (what `to_tensors` stores, bit for bit, apart from byte padding):
  bpw = ( b_Q·m·n                         codes of Q (E8P: 16 bits per 8 weights, b_Q = 2; with the
                                          residual code, 24 or 32 bits per 8 weights, b_Q = 3 or 4)
        + 32·m·n/g                        fp16 scale + fp16 offset per group of Q (g = group size;
                                          E8P: 16·m·n/g, a scale and no offset)
        + k·(m·b_L + n·b_R)               codes of L (m, k) and R (k, n)
        + 2·32·k                          fp16 scale + offset per rank component of L and of R
        + 16·k16·(m + n)                  the optional 16-bit part of the rank (recovery tuning only)
        + 32                              the float32 RMS scale of W
        + 2·64 if rotated                 the two int64 rotation seeds
        ) / (m·n)
Paper convention (CALDERA eq. for the bit budget): B_Q + B_LR·k(m+n)/(mn), scales left out.
"""

from __future__ import annotations

from calderalab.core.e8p_matrix import E8PMatrix
from calderalab.core.quantize import OFFSET_BITS, SCALE_BITS, QuantizedMatrix
from calderalab.core.spec import CompressionSpec

GRID_BITS = SCALE_BITS + OFFSET_BITS  # per group
W_SCALE_BITS = 32
SEED_BITS = 64
FP16_BITS = 16


def quantized_matrix_bits(qm: QuantizedMatrix | E8PMatrix) -> int:
    """Bits of the codes plus the per-group grid (or scales) of one quantised matrix."""
    if isinstance(qm, E8PMatrix):
        return qm.storage_bits()
    rows, cols = qm.shape
    return qm.bits * rows * cols + GRID_BITS * rows * (cols // qm.group_size)


def storage_bits(Q: QuantizedMatrix | E8PMatrix, factors: tuple[QuantizedMatrix, QuantizedMatrix] | None, rotated: bool,
                 fp16_values: int = 0) -> int:
    """Every stored bit of a decomposition: Q, the factors (Lᵀ, R), the W scale, the rotation seeds, and
    `fp16_values` float16 entries (the 16-bit part of the rank)."""
    total = quantized_matrix_bits(Q) + W_SCALE_BITS + (2 * SEED_BITS if rotated else 0) + FP16_BITS * fp16_values
    if factors is not None:
        total += sum(quantized_matrix_bits(f) for f in factors)
    return total


def module_bits(spec: CompressionSpec, d_out: int, d_in: int) -> int:
    """Every stored bit of a (d_out, d_in) matrix compressed under `spec`, as an exact integer (no tensors
    needed): plans add these up and compare against a budget without rounding."""
    m, n, k = d_out, d_in, spec.rank
    g = n if spec.group_size is None else spec.group_size
    if n % g:
        raise ValueError(f"group_size={g} does not divide d_in={n}")
    q_grid_bits = SCALE_BITS if spec.codebook == "e8p" else GRID_BITS
    bits = spec.bits * m * n + q_grid_bits * m * (n // g) + W_SCALE_BITS + (2 * SEED_BITS if spec.hadamard else 0)
    if k:
        bits += k * (m * spec.lr_bits + n * spec.lr_bits) + 2 * GRID_BITS * k
    return bits


def expected_bpw(spec: CompressionSpec, d_out: int, d_in: int) -> float:
    """The honest bpw a decomposition of a (d_out, d_in) matrix under `spec` will have (no tensors needed)."""
    return module_bits(spec, d_out, d_in) / (d_out * d_in)


def paper_bpw(bits: int, lr_bits: int, k: int, d_out: int, d_in: int) -> float:
    """B_Q + B_LR·k(m+n)/(mn): the CALDERA paper's count, without scales or zero points."""
    return bits + lr_bits * k * (d_out + d_in) / (d_out * d_in)
