"""Where and in which dtype the model runs: `--device` and `--dtype`, checked before any model loads.

- device: "auto" (cuda when a GPU is visible, else cpu), "cpu", "cuda" or "cuda:N".
- dtype: "auto" (float32 on cpu, where bf16 matmuls are slow; bfloat16 on a GPU), "float32" or
  "bfloat16". It is the dtype of the weights and activations in the forward passes; Hessians are
  accumulated and decompositions computed in float32 whatever it is.

Imports torch lazily (only to ask whether a GPU is there and to name the dtype).
"""

from __future__ import annotations

import re
from typing import Any

DEVICES_HELP = "auto, cpu, cuda or cuda:N (default auto: cuda when a GPU is visible, else cpu)"
DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16")
DTYPES_HELP = "auto, float32 or bfloat16 (default auto: float32 on cpu, bfloat16 on cuda)"
LOAD_MODES = ("auto", "memory", "layers")  # how a model is opened for forward passes: models.open_to_run


def check_load(load: str | None) -> str:
    """`load` when it is one of LOAD_MODES (None: "auto", an option not given); a clear error otherwise."""
    load = "auto" if load is None else load
    if load not in LOAD_MODES:
        raise ValueError(f"--load must be one of {', '.join(LOAD_MODES)}, got {load!r}")
    return load


_CUDA = re.compile(r"^cuda(:(?P<index>\d+))?$")


def resolve_device(device: str | None) -> str:
    """The device to run on; ValueError naming the fix for an unknown device or a missing GPU."""
    import torch

    device = "auto" if device is None else device.strip().lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    match = _CUDA.match(device)
    if match is None:
        raise ValueError(f"--device {device!r} is not a device: use {DEVICES_HELP}")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA GPU is visible here (torch {torch.__version__}, "
                         "torch.cuda.is_available() is False); use --device cpu or --device auto")
    index = int(match["index"] or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA GPU(s) are visible (cuda:0.."
                         f"cuda:{torch.cuda.device_count() - 1})")
    return device


def resolve(device: str | None, dtype: str | None) -> tuple[str, Any]:
    """(device, torch dtype) of `--device` / `--dtype`, resolved before any model loads."""
    run_device = resolve_device(device)
    return run_device, resolve_dtype(dtype, run_device)


def describe(device: str, dtype: Any) -> str:
    """"cpu, float32": where a command ran, for its output and its records."""
    return f"{device}, {str(dtype).removeprefix('torch.')}"


def resolve_dtype(dtype: str | None, device: str) -> Any:
    """The torch dtype of the forward passes on `device` (a resolved device)."""
    import torch

    dtype = "auto" if dtype is None else dtype.strip().lower()
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r} is not supported: use {DTYPES_HELP}")
    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    return getattr(torch, dtype)
