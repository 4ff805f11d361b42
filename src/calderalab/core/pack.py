"""Bit packing of b-bit integer codes into bytes (b in 2..8). Imports torch only.

Layout: codes are flattened in row-major order and written as one little-endian bit stream
(bit j of code i is stream bit i·b + j; stream bit t is bit t % 8 of byte t // 8), padded with
zero bits to a whole byte. The packed size is ceil(numel·b / 8) bytes, so storage is exactly
the b bits per code that bpw counts.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"bits={bits!r} must be an integer in 1..8")


def packed_nbytes(numel: int, bits: int) -> int:
    """Bytes that `pack_codes` produces for `numel` codes of `bits` bits."""
    return (numel * bits + 7) // 8


def pack_codes(codes: Tensor, bits: int) -> Tensor:
    """Pack integer codes (any shape, values in [0, 2^bits)) into a uint8 stream.

    Args:
      codes: (...) integer tensor.
    Returns:
      (ceil(numel·bits/8),) uint8.
    """
    _check_bits(bits)
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
    flat = codes.reshape(-1).to(torch.int64)  # (numel,)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 2**bits):
        raise ValueError(f"codes span [{int(flat.min())}, {int(flat.max())}], outside [0, {2**bits - 1}] for bits={bits}")
    if bits == 8:
        return flat.to(torch.uint8)
    shifts = torch.arange(bits, device=flat.device)  # (bits,)
    stream = ((flat[:, None] >> shifts) & 1).reshape(-1)  # (numel·bits,)
    pad = (-stream.numel()) % 8
    stream = torch.cat([stream, stream.new_zeros(pad)]).reshape(-1, 8)  # (n_bytes, 8)
    weights = 1 << torch.arange(8, device=flat.device)  # (8,)
    return (stream * weights).sum(dim=1).to(torch.uint8)


def unpack_codes(packed: Tensor, bits: int, numel: int) -> Tensor:
    """Inverse of `pack_codes`: the first `numel` codes of the stream, as uint8.

    Args:
      packed: (n_bytes,) uint8 with n_bytes == ceil(numel·bits/8).
    Returns:
      (numel,) uint8.
    """
    _check_bits(bits)
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise ValueError(f"packed must be a 1-D uint8 tensor, got {packed.dtype} of shape {tuple(packed.shape)}")
    if packed.numel() != packed_nbytes(numel, bits):
        raise ValueError(
            f"packed has {packed.numel()} bytes but {numel} codes of {bits} bits need {packed_nbytes(numel, bits)}"
        )
    if bits == 8:
        return packed.clone()
    raw = packed.to(torch.int64)
    stream = ((raw[:, None] >> torch.arange(8, device=raw.device)) & 1).reshape(-1)  # (n_bytes·8,)
    per_code = stream[: numel * bits].reshape(numel, bits)  # (numel, bits)
    weights = 1 << torch.arange(bits, device=raw.device)  # (bits,)
    return (per_code * weights).sum(dim=1).to(torch.uint8)


def pack_codes16(codes: Tensor) -> Tensor:
    """16-bit codes (any shape, values in [0, 2^16)) as a uint8 stream, low byte first.

    Args:
      codes: (...) integer tensor.
    Returns:
      (2·numel,) uint8: exactly 16 bits per code (an E8P codeword of 8 weights).
    """
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
    flat = codes.reshape(-1).to(torch.int64)  # (numel,)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 2**16):
        raise ValueError(f"codes span [{int(flat.min())}, {int(flat.max())}], outside [0, 65535] for 16-bit codes")
    return torch.stack([flat & 255, flat >> 8], dim=1).reshape(-1).to(torch.uint8)  # (numel·2,)


def unpack_codes16(packed: Tensor, numel: int) -> Tensor:
    """Inverse of `pack_codes16`: (2·numel,) uint8 → (numel,) int64."""
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise ValueError(f"packed must be a 1-D uint8 tensor, got {packed.dtype} of shape {tuple(packed.shape)}")
    if packed.numel() != 2 * numel:
        raise ValueError(f"packed has {packed.numel()} bytes but {numel} 16-bit codes need {2 * numel}")
    pairs = packed.to(torch.int64).reshape(numel, 2)  # (numel, 2)
    return pairs[:, 0] | (pairs[:, 1] << 8)
