"""Model references, loading, layer discovery, weight swap and export.

The only package that imports transformers, and only inside the functions that need it:
importing `calderalab.models` itself is cheap (names resolve lazily on first use).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ModelRef": "refs",
    "resolve_model_ref": "refs",
    "model_identity": "refs",
    "hf_hub_cache_dir": "refs",
    "load_model": "load",
    "load_skeleton": "load",
    "open_model": "load",
    "open_to_run": "load",
    "onloaded": "lazy",
    "state_tensors": "lazy",
    "layer_weights": "lazy",
    "prepare_tokenizer": "load",
    "calderalab_cache_dir": "load",
    "MODULE_NAMES": "layers",
    "LayerTargets": "layers",
    "UnsupportedModelError": "layers",
    "discover_layers": "layers",
    "num_layers": "layers",
    "module_shapes": "layers",
    "target_linear": "layers",
    "swapped_weights": "swap",
    "set_weights": "swap",
    "export_checkpoint": "export",
    "tiny_model": "tiny",
    "tiny_tokenizer": "tiny",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
