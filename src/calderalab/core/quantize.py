"""Uniform asymmetric group quantisation (2..8 bits). Imports torch only.

A row of X (rows, cols) is cut into groups of `group_size` consecutive columns (None = the whole
row). Each group g has an fp16 `offset` o_g and an fp16 `scale` s_g; an entry is stored as the
integer code c = clamp(round((x − o_g)/s_g), 0, 2^b − 1) and decoded as x̂ = o_g + s_g·c.

The grid is fitted so that the fp16-stored values still cover the group: o_g is min(x) rounded
*down* to fp16 and s_g is (max(x) − o_g)/(2^b − 1) rounded *up*, so every entry of the group lies on
[o_g, o_g + s_g·(2^b − 1)] and round-to-nearest errs by at most s_g/2. Storage per group: 32 bits
(two fp16), counted by `core.bpw`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Smallest positive normal fp16: the floor for a scale, so a constant group still decodes exactly.
_MIN_SCALE = 2.0**-14
SCALE_BITS = 16  # fp16 scale
OFFSET_BITS = 16  # fp16 offset


@dataclass(frozen=True)
class QuantizedMatrix:
    """Integer codes plus their per-group grid.

    codes: (rows, cols) uint8, values in [0, 2^bits).
    scale, offset: (rows, n_groups) float16, n_groups = cols // group_size.
    group_size: effective columns per group (cols when the spec said None).
    """

    codes: Tensor
    scale: Tensor
    offset: Tensor
    bits: int
    group_size: int

    def dequantize(self) -> Tensor:
        """(rows, cols) float32: offset + scale·code."""
        return decode(self.codes, self.scale, self.offset, self.group_size)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)  # type: ignore[return-value]


def effective_group_size(cols: int, group_size: int | None) -> int:
    """Columns per group; ValueError when `group_size` does not divide `cols`."""
    if group_size is None:
        return cols
    if cols % group_size != 0:
        raise ValueError(f"group_size={group_size} does not divide d_in={cols}; use a divisor or None (whole row)")
    return group_size


def _fp16_bits_step(h: Tensor, up: bool) -> Tensor:
    """The adjacent fp16 value above (up) or below each finite h (h: float16, no -0)."""
    bits = h.view(torch.int16)
    positive = h > 0
    stepped = torch.where(positive == up, bits + 1, bits - 1)  # away from zero when moving outwards
    stepped = stepped.view(torch.float16)
    tiny = torch.full_like(h, 2.0**-24 if up else -(2.0**-24))
    return torch.where(h == 0, tiny, stepped)


def round_to_fp16(x: Tensor, up: bool) -> Tensor:
    """x (float32) rounded to an fp16 value ≥ x (up) or ≤ x (down), returned as float32."""
    h = x.to(torch.float16) + 0.0  # "+ 0.0" turns -0 into +0 so the bit step below is monotone
    wrong_side = (h.float() < x) if up else (h.float() > x)
    h = torch.where(wrong_side, _fp16_bits_step(h, up), h)
    out = h.float()
    if not torch.isfinite(out).all():
        raise ValueError("values exceed the fp16 range of quantisation scales; normalise the matrix first")
    return out


def _grid_for_range(lo: Tensor, hi: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """fp16 (scale, offset) whose grid covers [lo, hi] (elementwise, lo ≤ hi)."""
    offset = round_to_fp16(lo, up=False)
    scale = round_to_fp16(((hi - offset) / (2**bits - 1)).clamp_min(_MIN_SCALE), up=True)
    return scale, offset


# Clip ratios p of the MSE grid search after min–max: 0.95 … 0.50, as float32 (what `p * half` computes in).
_CLIP_RATIOS = torch.tensor(torch.arange(0.95, 0.49, -0.05).tolist(), dtype=torch.float32)  # (10,)


def fit_grid(X: Tensor, bits: int, group_size: int | None, clip_search: bool = False) -> tuple[Tensor, Tensor]:
    """Per-group grid, fp16-representable.

    clip_search=False: min–max, covering every entry (|error| ≤ scale/2 everywhere).
    clip_search=True: the range [mid − p·half, mid + p·half] with the smallest squared error over
      p ∈ {1.00, 0.95, …, 0.50} per group (GPTQ's `mse` grid): trades clamping a few extreme
      entries for a finer step on the rest.

    Args:
      X: (rows, cols) float32.
    Returns:
      scale, offset: (rows, n_groups) float32 holding fp16 values.
    """
    rows, cols = X.shape
    g = effective_group_size(cols, group_size)
    groups = X.reshape(rows, cols // g, g)  # (rows, n_groups, g)
    lo, hi = groups.amin(dim=2), groups.amax(dim=2)  # (rows, n_groups)
    best = _grid_for_range(lo, hi, bits)
    if not clip_search:
        return best
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    best_err = _grid_sq_error(groups, *best, bits)
    # Every candidate grid in one call (its fp16 rounding is ~20 small ops: per candidate they cost more
    # than the error pass on row-wise grids); the error passes stay one at a time (batched they would
    # stream P copies of the matrix through the cache, measured 3-5x slower). Same bits as p by p.
    ps = _CLIP_RATIOS.to(X.device)[:, None, None]  # (P, 1, 1)
    scales, offsets = _grid_for_range(mid - ps * half, mid + ps * half, bits)  # (P, rows, n_groups) each
    for scale, offset in zip(scales, offsets):
        err = _grid_sq_error(groups, scale, offset, bits)
        better = err < best_err
        best = (torch.where(better, scale, best[0]), torch.where(better, offset, best[1]))
        best_err = torch.where(better, err, best_err)
    return best


def _grid_sq_error(groups: Tensor, scale: Tensor, offset: Tensor, bits: int) -> Tensor:
    """Σ (x − x̂)² per group. groups: (rows, n_groups, g) → (rows, n_groups).

    One buffer, updated in place: the clip search calls this 11 times per grid, and the plain
    expression's five temporaries cost 1.5-3x its arithmetic on SmolLM2's widths. Same operations in
    the same order as  (groups − (o + s·round((groups − o)/s).clamp(0, 2^b − 1)))², so the same bits."""
    s, o = scale[..., None], offset[..., None]
    t = groups - o  # (rows, n_groups, g)
    t.div_(s).round_().clamp_(0, 2**bits - 1).mul_(s).add_(o)  # x̂ (s·code + o equals o + s·code exactly)
    torch.sub(groups, t, out=t)
    return t.square_().sum(dim=2)


def encode(X: Tensor, scale: Tensor, offset: Tensor, bits: int, group_size: int) -> Tensor:
    """Round-to-nearest codes of X on a given grid (entries outside it are clamped).

    Args:
      X: (rows, cols); scale, offset: (rows, cols // group_size).
    Returns:
      (rows, cols) uint8 codes.
    """
    rows, cols = X.shape
    groups = X.reshape(rows, cols // group_size, group_size)  # (rows, n_groups, g)
    codes = torch.round((groups - offset[..., None]) / scale[..., None]).clamp_(0, 2**bits - 1)
    return codes.reshape(rows, cols).to(torch.uint8)  # (rows, cols)


def decode(codes: Tensor, scale: Tensor, offset: Tensor, group_size: int) -> Tensor:
    """x̂ = offset + scale·code per group. codes: (rows, cols) → (rows, cols) float32."""
    rows, cols = codes.shape
    groups = codes.reshape(rows, cols // group_size, group_size).float()  # (rows, n_groups, g)
    out = offset.float()[..., None] + scale.float()[..., None] * groups
    return out.reshape(rows, cols)


def quantize_rtn(X: Tensor, bits: int, group_size: int | None, clip_search: bool = False) -> QuantizedMatrix:
    """Round-to-nearest quantisation of X (rows, cols) on its own group grid (see `fit_grid`)."""
    X = X.float()
    g = effective_group_size(X.shape[1], group_size)
    scale, offset = fit_grid(X, bits, g, clip_search=clip_search)
    codes = encode(X, scale, offset, bits, g)
    return QuantizedMatrix(codes, scale.to(torch.float16), offset.to(torch.float16), bits, g)
