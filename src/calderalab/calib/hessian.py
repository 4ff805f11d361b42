"""Streaming Hessian accumulation for one linear module: H = XᵀX / n.

Owns only the accumulator; imports torch only (no transformers, no models).
"""

from __future__ import annotations

import torch

_DTYPES = (torch.float32, torch.float64)
# bfloat16 products run in chunks of this many tokens: each chunk's XᵀX is rounded to bfloat16 once
# (relative 2⁻⁹ per entry) before the float32 sum, so the sum's rounding error shrinks as 1/√chunks;
# 2048 keeps the matmuls large enough for AMX (`benchmarks/forward_dtype.py --products`).
PRODUCT_CHUNK = 2048


class HessianAccumulator:
    """Running sum of XᵀX over a stream of input batches.

    Each `update(X)` costs ONE matmul (XᵀX over the whole batch), never a loop over tokens:
    per-token outer products are what makes naive calibration slower than the decompositions.

    Args:
        d_in: input width of the linear module.
        dtype: accumulation dtype. float32 (default) is 2-4x faster on CPU and its relative rounding
            error (~1e-7·sqrt(n_batches)) is far below the sampling noise of calibration data;
            float64 (the reference CALDERA setting) for very long calibration streams.
        product_dtype: None (default) multiplies in `dtype`; torch.bfloat16 multiplies bfloat16 inputs
            in bfloat16, PRODUCT_CHUNK tokens at a time, each chunk's product added to the `dtype` sum
            (AMX / tensor-core matmuls: 2.3-2.8x faster than float32 on a Xeon with AMX; the inputs of a
            bfloat16 forward pass are bfloat16 values already, so only the chunks' roundings are added).
    """

    def __init__(self, d_in: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 product_dtype: torch.dtype | None = None):
        if not isinstance(d_in, int) or d_in <= 0:
            raise ValueError(f"d_in must be a positive int, got {d_in!r}")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if product_dtype not in (None, torch.bfloat16):
            raise ValueError(f"product_dtype must be None or torch.bfloat16, got {product_dtype}")
        self.d_in = d_in
        self.dtype = dtype
        self.product_dtype = product_dtype
        self._sum = torch.zeros(d_in, d_in, dtype=dtype, device=device)  # (d_in, d_in)
        self.n_tokens = 0

    def update(self, X: torch.Tensor) -> None:
        """Add a batch of inputs. X: (..., d_in), flattened to (n, d_in)."""
        if X.shape[-1] != self.d_in:
            raise ValueError(f"input width {X.shape[-1]} does not match d_in={self.d_in} (X shape {tuple(X.shape)})")
        X = X.detach().reshape(-1, self.d_in).to(device=self._sum.device, dtype=self.product_dtype or self.dtype)  # (n, d_in)
        if X.shape[0] == 0:
            return
        if self.product_dtype is None:
            self._sum.addmm_(X.T, X)  # (d_in, d_in) += (d_in, n) @ (n, d_in)
        else:
            # Chunk (c, d_in) read transposed in place: a contiguous copy of chunk.T cost more than the
            # product at d_in = 576 (0.19 s vs 0.09 s per 65,536 tokens: `benchmarks/forward_dtype.py --products`).
            for chunk in X.split(PRODUCT_CHUNK):
                self._sum.add_(chunk.T @ chunk)  # (d_in, d_in) in product_dtype, summed in dtype
        self.n_tokens += X.shape[0]

    def hessian(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """H = XᵀX / n as a new tensor (d_in, d_in) in `dtype`; the accumulator is left untouched."""
        if self.n_tokens == 0:
            raise ValueError("no inputs were accumulated: the calibration data produced zero tokens")
        H = self._sum / self.n_tokens
        # Exact symmetry: addmm is symmetric up to rounding; downstream Cholesky wants it exact.
        H = (H + H.T) / 2
        return H.to(dtype)
