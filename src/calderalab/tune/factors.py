"""Trainable L, R over a frozen CALDERA backbone Q, and the same split as a LoRA layer.

A stored module is (core.decomposition) Ŵ = w_scale·T_out⁻¹(Q + L·R)T_in⁻ᵀ, T the random-sign
Hadamard transforms named by its rotation seeds. The rotations are linear, so

    Ŵ = W_Q + B·A,   W_Q = w_scale·T_out⁻¹ Q T_in⁻ᵀ   (d_out, d_in)   the frozen backbone
                     B   = w_scale·T_out⁻¹ L          (d_out, k)
                     A   = R·T_in⁻ᵀ                   (k, d_in)

i.e. a LoRA layer y = x·W_Qᵀ + (x·Aᵀ)·Bᵀ with scaling 1. Training keeps L and R in the rotated
basis, where they are stored, so re-quantising them uses the compression's own quantiser.
With `quant_aware`, the forward sees the factors as they will be stored (quantise-dequantise,
straight-through gradient): small updates then accumulate in the float factors until they move
a code, and the loss being minimised is the loss of the stored result.

The optional 16-bit part of the rank (`rank16`, CALDERA's "16-bit factors" as extra rank): L16 (d_out, k16),
R16 (k16, d_in) in the same rotated basis, stored as float16 (core.lowrank.DenseFactors). They start as
LoRA does, L16 = 0 and R16 seeded Gaussian with rows of norm ≈ k16^-½, so the module before the first step is
exactly the stored one; in the LoRA view they are k16 more columns of B and rows of A.

Imports torch, calderalab.core and calderalab.models (module lookup only).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from calderalab.core.decomposition import Decomposition
from calderalab.core.hadamard import inverse_rht
from calderalab.core.lowrank import DenseFactors, LowRankFactors
from calderalab.core.quantize import QuantizedMatrix, quantize_rtn


def quantize_factor(F_: Tensor, lr_bits: int) -> QuantizedMatrix:
    """The factor quantiser of compression (core.lowrank): one MSE-clipped grid per row of F (k, ·).

    Repeated here rather than importing a private name; tests/tune check both give equal codes.
    """
    return quantize_rtn(F_, lr_bits, None, clip_search=True)


def backbone(decomposition: Decomposition) -> Tensor:
    """W_Q = w_scale·T_out⁻¹ Q T_in⁻ᵀ: the module without its low-rank part, (d_out, d_in) float32."""
    return dataclasses.replace(decomposition, factors=None, dense=None).reconstruct()


def stored_factors(decomposition: Decomposition) -> tuple[Tensor, Tensor]:
    """The whole stored low-rank part in the rotated basis, de-quantised: L (d_out, k + k16), R (k + k16, d_in),
    the quantised rank first, then the 16-bit part. L·R + Q is what `reconstruct` rotates back."""
    f, d = decomposition.factors, decomposition.dense
    if f is None and d is None:
        raise ValueError(f"module of shape {decomposition.shape} stores no low-rank part")
    Ls = ([] if f is None else [f.Lt.dequantize().T]) + ([] if d is None else [d.Lt.float().T])  # (d_out, ·)
    Rs = ([] if f is None else [f.R.dequantize()]) + ([] if d is None else [d.R.float()])  # (·, d_in)
    return torch.cat(Ls, dim=1).contiguous(), torch.cat(Rs, dim=0).contiguous()


def lora_pair(L: Tensor, R: Tensor, rotation_seeds: tuple[int, int] | None, w_scale: float) -> tuple[Tensor, Tensor]:
    """(B, A) with B·A = w_scale·T_out⁻¹ (L·R) T_in⁻ᵀ. L: (d_out, k), R: (k, d_in) → B (d_out, k), A (k, d_in).

    Differentiable in L and R (the transforms are matmuls with fixed blocks and signs).
    """
    if rotation_seeds is not None:
        s_out, s_in = rotation_seeds
        L = inverse_rht(L, s_out, dim=0)  # (d_out, k): T_out⁻¹ applied to every column
        R = inverse_rht(R, s_in, dim=1)  # (k, d_in): T_in⁻¹ applied to every row, i.e. R·T_in⁻ᵀ
    return L * w_scale, R


def tunable(decomposition: Decomposition, rank16: int) -> bool:
    """A module is trained when it has a low-rank part (quantised factors or a 16-bit part) or gets one."""
    return decomposition.factors is not None or decomposition.dense is not None or rank16 > 0


def fake_quantize(F_: Tensor, lr_bits: int) -> Tensor:
    """F's stored value in the forward pass, identity gradient in the backward (straight-through). F: (k, ·)."""
    with torch.no_grad():
        stored = quantize_factor(F_.detach(), lr_bits).dequantize()  # (k, ·)
    return F_ + (stored - F_).detach()


def fake_half(F_: Tensor) -> Tensor:
    """F rounded to float16 in the forward pass (as the 16-bit part is stored), straight-through backward."""
    return F_ + (F_.detach().half().float() - F_.detach())


class LowRankLinear(nn.Module):
    """y = x·W_Qᵀ + bias + (x·Aᵀ)·Bᵀ with W_Q frozen (a buffer) and L, R trainable (rotated basis).

    L: (d_out, k), R: (k, d_in) start at the stored factors, de-quantised. rank16 > 0 adds a 16-bit part
    L16 (d_out, k16), R16 (k16, d_in) (see the module docstring; a store that already has one continues from
    it and rank16 must then match); `generator` seeds R16's start. A module without quantised factors
    (ldlq, rtn) is tunable only through a 16-bit part: then L and R are None and Q alone is the base.
    """

    def __init__(self, decomposition: Decomposition, bias: Tensor | None, quant_aware: bool, rank16: int = 0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not tunable(decomposition, rank16):
            raise ValueError(f"module of shape {decomposition.shape} has no low-rank factors (method "
                             f"{decomposition.spec.method!r}): only caldera modules can be tuned, or any with rank16 > 0")
        if decomposition.dense is not None and rank16 not in (0, decomposition.rank16):
            raise ValueError(f"already holds a 16-bit rank part of rank {decomposition.rank16}: tune it with rank16 "
                             f"{decomposition.rank16} or 0 (either continues from it), not {rank16}")
        room = min(decomposition.shape) - decomposition.rank
        if decomposition.dense is None and rank16 > room:
            raise ValueError(f"rank16 {rank16} does not fit {decomposition.shape} beside its rank-{decomposition.rank} "
                             f"factors: at most {room}")
        self.decomposition = decomposition
        self.quant_aware = quant_aware
        self.register_buffer("base", backbone(decomposition), persistent=False)  # (d_out, d_in)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone(), persistent=False)
        self.L = self.R = self.L16 = self.R16 = None
        if decomposition.factors is not None:
            self.L = nn.Parameter(decomposition.factors.Lt.dequantize().T.contiguous())  # (d_out, k)
            self.R = nn.Parameter(decomposition.factors.R.dequantize().clone())  # (k, d_in)
        d_out, d_in = decomposition.shape
        if decomposition.dense is not None:
            self.L16 = nn.Parameter(decomposition.dense.Lt.float().T.contiguous())  # (d_out, k16)
            self.R16 = nn.Parameter(decomposition.dense.R.float().clone())  # (k16, d_in)
        elif rank16:
            R16 = torch.randn(rank16, d_in, generator=generator) / (rank16 * d_in) ** 0.5  # (k16, d_in)
            self.L16 = nn.Parameter(torch.zeros(d_out, rank16))
            self.R16 = nn.Parameter(R16.half().float())  # already what float16 stores

    def factors(self) -> tuple[Tensor, Tensor]:
        """(L, R) as the forward uses them, the 16-bit part appended as more rank: fake-quantised (and
        rounded to float16) when quant_aware. → (d_out, k + k16), (k + k16, d_in)."""
        Ls, Rs = [], []
        if self.L is not None:
            bits = self.decomposition.spec.lr_bits
            Ls.append(fake_quantize(self.L.T, bits).T if self.quant_aware else self.L)
            Rs.append(fake_quantize(self.R, bits) if self.quant_aware else self.R)
        if self.L16 is not None:
            Ls.append(fake_half(self.L16) if self.quant_aware else self.L16)
            Rs.append(fake_half(self.R16) if self.quant_aware else self.R16)
        return (Ls[0], Rs[0]) if len(Ls) == 1 else (torch.cat(Ls, dim=1), torch.cat(Rs, dim=0))

    def forward(self, x: Tensor) -> Tensor:
        L, R = self.factors()
        B, A = lora_pair(L, R, self.decomposition.rotation_seeds, self.decomposition.w_scale)
        x32 = x.float()
        y = F.linear(x32, self.base, self.bias) + F.linear(F.linear(x32, A), B)  # (..., d_out)
        return y.to(x.dtype)

    def stored(self) -> Decomposition:
        """The decomposition with the current L, R re-quantised and L16, R16 rounded to float16 (Q, scales,
        seeds unchanged)."""
        bits = self.decomposition.spec.lr_bits
        with torch.no_grad():
            factors = None if self.L is None else LowRankFactors(quantize_factor(self.L.detach().T, bits),
                                                                 quantize_factor(self.R.detach(), bits))
            dense = None if self.L16 is None else DenseFactors(self.L16.detach().T.half().contiguous(),
                                                               self.R16.detach().half().contiguous())
        return dataclasses.replace(self.decomposition, factors=factors, dense=dense)


@contextlib.contextmanager
def installed(model: nn.Module, modules: Mapping[tuple[int, str], LowRankLinear]) -> Iterator[nn.Module]:
    """Within the block, each (layer, name) target of `model` is the given LowRankLinear; the original
    nn.Linear objects are put back on exit (also on exception)."""
    from calderalab.models import discover_layers

    layers = discover_layers(model)
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for (layer, name), replacement in modules.items():
            parent_path, _, child = layers[layer].qualified_names[name].rpartition(".")
            parent = model.get_submodule(parent_path)
            swapped.append((parent, child, getattr(parent, child)))
            setattr(parent, child, replacement)
        yield model
    finally:
        for parent, child, original in reversed(swapped):
            setattr(parent, child, original)
