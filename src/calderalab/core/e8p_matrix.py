"""A matrix quantised onto the E8P codebook with one fp16 scale per group of columns. Imports torch only.

A row of X (rows, cols) is cut into groups of `group_size` columns (None = the whole row; a
multiple of 8), and each group into 8-vectors. Group g has one fp16 scale s_g and every 8-vector v
of it is stored as the 16-bit code of the E8P codeword nearest to v / s_g (core.e8p); it decodes
as s_g · codeword. Storage: 16 bits per 8 weights (2 bpw) plus 16 bits per group; there is no
offset: the codebook is symmetric and rotated rows have mean ≈ 0.

The scale is RMS-based, as QuIP# chooses it: s_g = RMS(group) / TARGET_RMS, where TARGET_RMS is
the standard deviation of an i.i.d. Gaussian source that the unit codebook quantises best
(QuIP#'s `opt_scale` = 1.03; measured here on 200 000 Gaussian 8-vectors: MSE/σ² 0.0918 at 1.00,
0.0913 at 1.03, 0.0914 at 1.06, 0.0926 at 1.10).

At 3 and 4 bits (QuIP#'s residual codebooks, see core.e8p) each 8-vector also has a residual code:
v / s_g ≈ e8p(c₁) + second(c₂) / RESID_SCALE[bits], with QuIP#'s scales (TARGET_RMS 0.98 at 3 bits,
1.03 at 2 and 4). Storage: 16 + 8 (3 bits) or 16 + 16 (4 bits) bits per 8 weights, plus the scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from calderalab.core import e8p
from calderalab.core.quantize import _MIN_SCALE, SCALE_BITS, effective_group_size, round_to_fp16

TARGET_RMS = {2: 1.03, 3: 0.98, 4: 1.03}  # bits -> RMS of v / s_g (QuIP#'s opt_scale of each codebook)
BITS = tuple(TARGET_RMS)


@dataclass(frozen=True)
class E8PMatrix:
    """E8P codes, the residual codes at 3 and 4 bits, and their per-group scales.

    codes: (rows, cols // 8) int64, values in [0, 2^16).
    scale: (rows, n_groups) float16, n_groups = cols // group_size.
    group_size: effective columns per group (cols when the spec said None), a multiple of 8.
    bits: 2, 3 or 4 bits per weight.
    resid: (rows, cols // 8) int64 residual codes (E81B at 3 bits, E8P at 4), None at 2 bits.
    """

    codes: Tensor
    scale: Tensor
    group_size: int
    bits: int = 2
    resid: Tensor | None = None

    def __post_init__(self) -> None:
        if self.bits not in BITS:
            raise ValueError(f"E8P codebooks have {BITS} bits per weight, got bits={self.bits}")
        if (self.resid is None) != (self.bits == 2):
            raise ValueError(f"bits={self.bits} {'needs' if self.bits > 2 else 'takes no'} residual codes")
        if self.resid is not None and self.resid.shape != self.codes.shape:
            raise ValueError(f"residual codes {tuple(self.resid.shape)} do not match codes {tuple(self.codes.shape)}")

    def dequantize(self) -> Tensor:
        """(rows, cols) float32: scale · codeword."""
        rows, n_vec = self.codes.shape
        V = decode_vectors(self.codes, self.resid, self.bits)  # (rows, cols // 8, 8)
        W = V.reshape(rows, n_vec * e8p.DIM)  # (rows, cols)
        return W * self.scale.float().repeat_interleave(self.group_size, dim=1)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.codes.shape[0], self.codes.shape[1] * e8p.DIM)

    def storage_bits(self) -> int:
        """Codes (16 bits per 8-vector, plus 8 or 16 for the residual) plus one fp16 scale per group."""
        rows, n_vec = self.codes.shape
        return self.bits * e8p.DIM * rows * n_vec + SCALE_BITS * self.scale.numel()


def e8p_group_size(cols: int, group_size: int | None) -> int:
    """Columns per scale group; ValueError unless it divides `cols` and is a multiple of 8."""
    g = effective_group_size(cols, group_size)
    if g % e8p.DIM:
        raise ValueError(f"the E8P codebook quantises 8 columns at a time: d_in={cols} / group_size={group_size} "
                         f"must be a multiple of 8")
    return g


def fit_scale(X: Tensor, group_size: int, bits: int = 2) -> Tensor:
    """RMS-based scale per group, fp16-representable: (rows, cols) → (rows, cols // group_size) float32.
    An all-zero group gets scale 0: the codebook has no zero codeword, so only a zero scale keeps it exact."""
    rows, cols = X.shape
    groups = X.float().reshape(rows, cols // group_size, group_size)  # (rows, n_groups, g)
    rms = groups.pow(2).mean(dim=2).sqrt()  # (rows, n_groups)
    scale = round_to_fp16((rms / TARGET_RMS[bits]).clamp_min(_MIN_SCALE), up=True)
    return torch.where(rms > 0, scale, torch.zeros_like(scale))


def decode_vectors(codes: Tensor, resid: Tensor | None, bits: int) -> Tensor:
    """Unit-scale 8-vectors of (codes, residual codes): (...,) → (..., 8) float32."""
    V = e8p.decode(codes)
    if bits == 2:
        return V
    second = e8p.decode_e81b(resid) if bits == 3 else e8p.decode(resid)
    return V + second / e8p.RESID_SCALE[bits]


def encode_vectors(X: Tensor, col_scale: Tensor, bits: int = 2) -> tuple[Tensor, Tensor | None]:
    """Codes of X / col_scale, 8 columns at a time: X, col_scale (rows, 8·m) → (codes, residual codes),
    each (rows, m) int64; the residual is None at 2 bits. Each stage takes its nearest codeword."""
    rows, cols = X.shape
    safe = torch.where(col_scale > 0, col_scale, torch.ones_like(col_scale))  # a zero-scale group decodes to 0
    V = (X.float() / safe).reshape(rows * cols // e8p.DIM, e8p.DIM)  # (rows·m, 8)
    codes = e8p.nearest_codes(V)  # (rows·m,)
    if bits == 2:
        return codes.reshape(rows, cols // e8p.DIM), None
    R = (V - e8p.decode(codes)) * e8p.RESID_SCALE[bits]  # (rows·m, 8)
    resid = e8p.nearest_e81b(R) if bits == 3 else e8p.nearest_codes(R)
    return codes.reshape(rows, cols // e8p.DIM), resid.reshape(rows, cols // e8p.DIM)


def quantize_e8p(X: Tensor, group_size: int | None, bits: int = 2) -> E8PMatrix:
    """Nearest-codeword quantisation of X (rows, cols) with its own RMS scales (no feedback)."""
    g = e8p_group_size(X.shape[1], group_size)
    scale = fit_scale(X, g, bits)
    codes, resid = encode_vectors(X, scale.repeat_interleave(g, dim=1), bits)
    return E8PMatrix(codes, scale.to(torch.float16), g, bits, resid)
