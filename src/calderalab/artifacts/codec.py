"""Byte-deterministic safetensors encoding of one module's tensors and metadata.

safetensors' own `save` keeps the metadata in a hash map, so the header's key order (and
so the file's sha256) changes from run to run. Resume must end byte-identical to an
uninterrupted run, so we write the (simple, documented) format ourselves with sorted keys:
8-byte little-endian header length, JSON header padded with spaces to 8 bytes, then the
tensors' bytes back to back in name order. Any safetensors reader loads the result.
"""

from __future__ import annotations

import json
import struct

import torch
from safetensors.torch import load as _st_load

_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def encode(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors bytes of `tensors` (CPU, any shape) with `metadata` (str -> str), deterministic."""
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _DTYPES:
            raise TypeError(f"tensor {name!r} has dtype {t.dtype}, not storable: use one of {list(_DTYPES.values())}")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()  # native order; little-endian hosts only
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to an 8-byte boundary
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def read_metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` dict of safetensors bytes."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]).get("__metadata__", {})


def decode(data: bytes) -> dict[str, torch.Tensor]:
    """The tensors of safetensors bytes (through the safetensors library, which validates offsets)."""
    return _st_load(data)
