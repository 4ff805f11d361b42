"""Replace target weights in a model: temporarily (`swapped_weights`) or for good (`set_weights`).

A mapping is {(layer, canonical name): W_hat} with W_hat of the module's shape (d_out, d_in).
Every entry is validated before any weight changes, so a bad mapping leaves the model untouched.
W_hat is cast to the module's dtype and device (CALDERA reconstructs in float32; a bf16 model
stores bf16), and copied in place so the Parameter objects and their storage stay the same
(hooks, tied references and accelerate offload keep working).

On a lazily opened model (`lazy.open_lazy`) a change is made one layer at a time: the layer is
read, its weights set, the layer written to a scratch file that later reads return
(`LayerWeights.persist`) and released; `swapped_weights` forgets those files on exit. So even a
mapping over every layer never holds more than one decoder layer beyond the mapping itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from calderalab.models.layers import check_layer_index, check_module_name, discover_layers
from calderalab.models.lazy import layer_weights, onloaded

WeightMapping = Mapping[tuple[int, str], torch.Tensor]


def _prepare(model: nn.Module, mapping: WeightMapping) -> list[tuple[int, nn.Linear, torch.Tensor, str]]:
    """Validate every entry and return (layer, module, W cast to the module's dtype/device, qualified name)."""
    if not isinstance(mapping, Mapping):
        raise TypeError(f"weights must be a mapping {{(layer, name): tensor}}, got {type(mapping).__name__}")
    layers = discover_layers(model)
    reader = layer_weights(model)
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
        device = reader.device if module.weight.is_meta and reader is not None else module.weight.device
        W_cast = W_hat.detach().to(device=device, dtype=module.weight.dtype)
        if not torch.isfinite(W_cast).all():
            raise ValueError(f"weight for {where} contains NaN or Inf (after casting to {module.weight.dtype})")
        prepared.append((layer, module, W_cast, where))
    return prepared


@torch.no_grad()
def set_weights(model: nn.Module, mapping: WeightMapping) -> nn.Module:
    """Permanently overwrite the given target weights (in place). Returns the model."""
    prepared = _prepare(model, mapping)
    reader = layer_weights(model)
    if reader is None:
        for _, module, W_cast, _ in prepared:
            module.weight.copy_(W_cast)
        return model
    targets = discover_layers(model)
    with reader.all_or_nothing():
        for index in sorted({entry[0] for entry in prepared}):
            with onloaded(model, targets[index]):
                for _, module, W_cast, _ in (entry for entry in prepared if entry[0] == index):
                    module.weight.copy_(W_cast)
                reader.persist(targets[index].layer, targets[index].path)
    return model


@contextlib.contextmanager
def swapped_weights(model: nn.Module, mapping: WeightMapping) -> Iterator[nn.Module]:
    """Within the block the model uses the given weights; on exit (also on exception) the
    original weights are restored bit for bit. Nested use restores in reverse order."""
    reader = layer_weights(model)
    if reader is not None:
        with reader.restoring():
            set_weights(model, mapping)
            yield model
        return
    prepared = _prepare(model, mapping)
    originals: list[tuple[nn.Linear, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for _, module, W_cast, _ in prepared:
                originals.append((module, module.weight.detach().clone()))
                module.weight.copy_(W_cast)
        yield model
    finally:
        with torch.no_grad():
            for module, original in reversed(originals):
                module.weight.copy_(original)
