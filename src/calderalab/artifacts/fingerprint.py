"""Fingerprints of original weights and of stored files. Imports torch and hashlib only.

A fingerprint ties an artifact to the exact weight it was made from: the report's 72B run
applied artifacts made from another model (weight correlation -0.013) and lost a day.
"""

from __future__ import annotations

import hashlib

import torch


def weight_fingerprint(W: torch.Tensor) -> str:
    """sha256 hex of W's values as contiguous little-endian float32 bytes.

    W: (d_out, d_in), any float dtype and device. Casting to float32 first makes the
    fingerprint of a bf16/fp16 weight independent of the dtype the model was loaded in
    (both are exact in float32). The shape is checked separately, in the manifest.
    """
    data = W.detach().to(device="cpu", dtype=torch.float32).contiguous()
    # numpy() on a CPU tensor shares its memory, so hashing the buffer copies nothing.
    return hashlib.sha256(data.numpy().data).hexdigest()


def bytes_sha256(data: bytes) -> str:
    """sha256 hex of a file's bytes (the manifest's per-file checksum)."""
    return hashlib.sha256(data).hexdigest()
