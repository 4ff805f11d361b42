"""Replace target weights in a model: temporarily (`swapped_weights`) or for good (`set_weights`).

A mapping is {(layer, canonical name): W_hat} with W_hat of the module's shape (d_out, d_in).
Every entry is validated before any weight changes, so a bad mapping leaves the model untouched.
W_hat is cast to the module's dtype and device (CALDERA reconstructs in float32; a bf16 model
stores bf16), and copied in place so the Parameter objects and their storage stay the same
(hooks, tied references and accelerate offload keep working).

On a lazily opened model (`lazy.open_lazy`) the layers a mapping touches are onloaded for the
block of `swapped_weights` (so a `streamed_forward` inside it runs the swapped layer, not a fresh
read), and `set_weights` persists each changed layer so that later reads return the new weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from calderalab.models.layers import check_layer_index, check_module_name, discover_layers
from calderalab.models.lazy import layer_weights, onloaded

WeightMapping = Mapping[tuple[int, str], torch.Tensor]


def _prepare(model: nn.Module, mapping: WeightMapping) -> list[tuple[nn.Linear, torch.Tensor, str]]:
    """Validate every entry and return (module, W cast to the module's dtype/device, qualified name)."""
    if not isinstance(mapping, Mapping):
        raise TypeError(f"weights must be a mapping {{(layer, name): tensor}}, got {type(mapping).__name__}")
    layers = discover_layers(model)
    prepared = []
    for key, W_hat in mapping.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"weight key must be (layer, name), got {key!r}")
        layer = check_layer_index(key[0], len(layers))
        name = check_module_name(key[1])
        module = layers[layer].modules[name]
        where = layers[layer].qualified_names[name]
        if not isinstance(W_hat, torch.Tensor):
            raise TypeError(f"weight for {where} must be a torch.Tensor, got {type(W_hat).__name__}")
        if tuple(W_hat.shape) != tuple(module.weight.shape):
            raise ValueError(
                f"weight for {where} has shape {tuple(W_hat.shape)}, expected {tuple(module.weight.shape)} (d_out, d_in)"
            )
        if not W_hat.is_floating_point():
            raise ValueError(f"weight for {where} has dtype {W_hat.dtype}; a floating dtype is required")
        W_cast = W_hat.detach().to(device=module.weight.device, dtype=module.weight.dtype)
        if not torch.isfinite(W_cast).all():
            raise ValueError(f"weight for {where} contains NaN or Inf (after casting to {module.weight.dtype})")
        prepared.append((module, W_cast, where))
    return prepared


def _held(model: nn.Module, mapping: WeightMapping) -> contextlib.ExitStack:
    """The mapping's layers onloaded (a no-op on a model in memory) until the stack closes."""
    stack = contextlib.ExitStack()
    if layer_weights(model) is not None and isinstance(mapping, Mapping):
        layers = discover_layers(model)
        for index in sorted({key[0] for key in mapping if isinstance(key, tuple) and key and isinstance(key[0], int)}):
            if 0 <= index < len(layers):
                stack.enter_context(onloaded(model, layers[index]))
    return stack


@torch.no_grad()
def set_weights(model: nn.Module, mapping: WeightMapping) -> nn.Module:
    """Permanently overwrite the given target weights (in place). Returns the model."""
    reader = layer_weights(model)
    with _held(model, mapping):
        for module, W_cast, _ in _prepare(model, mapping):
            module.weight.copy_(W_cast)
        if reader is not None:
            layers = discover_layers(model)
            for index in sorted({key[0] for key in mapping}):
                reader.persist(layers[index].layer, layers[index].path)
    return model


@contextlib.contextmanager
def swapped_weights(model: nn.Module, mapping: WeightMapping) -> Iterator[nn.Module]:
    """Within the block the model uses the given weights; on exit (also on exception) the
    original weights are restored bit for bit. Nested use restores in reverse order."""
    with _held(model, mapping):
        with _swapped(model, mapping):
            yield model


@contextlib.contextmanager
def _swapped(model: nn.Module, mapping: WeightMapping) -> Iterator[nn.Module]:
    prepared = _prepare(model, mapping)
    originals: list[tuple[nn.Linear, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for module, W_cast, _ in prepared:
                originals.append((module, module.weight.detach().clone()))
                module.weight.copy_(W_cast)
        yield model
    finally:
        with torch.no_grad():
            for module, original in reversed(originals):
                module.weight.copy_(original)
