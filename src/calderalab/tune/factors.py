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
from calderalab.core.lowrank import LowRankFactors
from calderalab.core.quantize import QuantizedMatrix, quantize_rtn


def quantize_factor(F_: Tensor, lr_bits: int) -> QuantizedMatrix:
    """The factor quantiser of compression (core.lowrank): one MSE-clipped grid per row of F (k, ·).

    Repeated here rather than importing a private name; tests/tune check both give equal codes.
    """
    return quantize_rtn(F_, lr_bits, None, clip_search=True)


def backbone(decomposition: Decomposition) -> Tensor:
    """W_Q = w_scale·T_out⁻¹ Q T_in⁻ᵀ: the module without its low-rank part, (d_out, d_in) float32."""
    return dataclasses.replace(decomposition, factors=None).reconstruct()


def lora_pair(L: Tensor, R: Tensor, rotation_seeds: tuple[int, int] | None, w_scale: float) -> tuple[Tensor, Tensor]:
    """(B, A) with B·A = w_scale·T_out⁻¹ (L·R) T_in⁻ᵀ. L: (d_out, k), R: (k, d_in) → B (d_out, k), A (k, d_in).

    Differentiable in L and R (the transforms are matmuls with fixed blocks and signs).
    """
    if rotation_seeds is not None:
        s_out, s_in = rotation_seeds
        L = inverse_rht(L, s_out, dim=0)  # (d_out, k): T_out⁻¹ applied to every column
        R = inverse_rht(R, s_in, dim=1)  # (k, d_in): T_in⁻¹ applied to every row, i.e. R·T_in⁻ᵀ
    return L * w_scale, R


def fake_quantize(F_: Tensor, lr_bits: int) -> Tensor:
    """F's stored value in the forward pass, identity gradient in the backward (straight-through). F: (k, ·)."""
    with torch.no_grad():
        stored = quantize_factor(F_.detach(), lr_bits).dequantize()  # (k, ·)
    return F_ + (stored - F_).detach()


class LowRankLinear(nn.Module):
    """y = x·W_Qᵀ + bias + (x·Aᵀ)·Bᵀ with W_Q frozen (a buffer) and L, R trainable (rotated basis).

    L: (d_out, k), R: (k, d_in) start at the stored factors, de-quantised.
    """

    def __init__(self, decomposition: Decomposition, bias: Tensor | None, quant_aware: bool) -> None:
        super().__init__()
        if decomposition.factors is None:
            raise ValueError(f"module of shape {decomposition.shape} has no low-rank factors (method "
                             f"{decomposition.spec.method!r}): only caldera modules can be tuned")
        self.decomposition = decomposition
        self.quant_aware = quant_aware
        self.register_buffer("base", backbone(decomposition), persistent=False)  # (d_out, d_in)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone(), persistent=False)
        self.L = nn.Parameter(decomposition.factors.Lt.dequantize().T.contiguous())  # (d_out, k)
        self.R = nn.Parameter(decomposition.factors.R.dequantize().clone())  # (k, d_in)

    def factors(self) -> tuple[Tensor, Tensor]:
        """(L, R) as the forward uses them: fake-quantised when quant_aware."""
        if not self.quant_aware:
            return self.L, self.R
        bits = self.decomposition.spec.lr_bits
        return fake_quantize(self.L.T, bits).T, fake_quantize(self.R, bits)

    def forward(self, x: Tensor) -> Tensor:
        L, R = self.factors()
        B, A = lora_pair(L, R, self.decomposition.rotation_seeds, self.decomposition.w_scale)
        x32 = x.float()
        y = F.linear(x32, self.base, self.bias) + F.linear(F.linear(x32, A), B)  # (..., d_out)
        return y.to(x.dtype)

    def stored(self) -> Decomposition:
        """The decomposition with the current L, R re-quantised (Q, scales, seeds unchanged)."""
        bits = self.decomposition.spec.lr_bits
        with torch.no_grad():
            factors = LowRankFactors(quantize_factor(self.L.detach().T, bits), quantize_factor(self.R.detach(), bits))
        return dataclasses.replace(self.decomposition, factors=factors)


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
