"""Larger-than-memory checkpoints: the model skeleton in memory, decoder layers read on demand.

`open_lazy(directory)` builds the model on the meta device (rotary frequencies and other
non-persistent buffers are then computed for real), loads what lives outside the decoder stack (embeddings, final
norm, lm_head), and attaches a `LayerWeights` reader. Work on a decoder layer happens inside
`onloaded(model, target)`: the layer's parameters are read from the safetensors shards, cast to
the model's dtype and device, and put back on the meta device when the block ends. Peak memory
is then about one decoder layer plus whatever the caller keeps (the way llm-compressor and
GPTQModel onload layers sequentially).

On a model that is fully in memory (`load_model`, a tiny test model) `onloaded` does nothing,
so compression has one code path whichever way the model was opened.

Forward passes (sensitivity, evaluation) run inside `streamed_forward`, which onloads each layer as
it runs. Weights that replace a layer's for good (stored artifacts applied for an evaluation) are
written once to a scratch safetensors file by `LayerWeights.persist`, and later loads read that
file instead of the checkpoint (accelerate's offload folder, for one layer at a time).

Imports torch and safetensors; transformers only inside `open_lazy`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from calderalab.errors import ModelRefError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_ATTRIBUTE = "calderalab_layer_weights"  # where the reader hangs on a lazily opened model


@dataclass(frozen=True)
class ShardIndex:
    """Which safetensors file holds each tensor: name -> file name inside `directory`."""

    directory: Path
    weight_map: dict[str, str]


def shard_index(directory: Path) -> ShardIndex | None:
    """The checkpoint's shard index (sharded or single-file safetensors); None when it has neither."""
    directory = Path(directory)
    if (directory / INDEX_FILE).is_file():
        weight_map = json.loads((directory / INDEX_FILE).read_text())["weight_map"]
        return ShardIndex(directory, dict(weight_map))
    if (directory / SINGLE_FILE).is_file():
        from safetensors import safe_open

        with safe_open(str(directory / SINGLE_FILE), framework="pt") as handle:
            return ShardIndex(directory, {name: SINGLE_FILE for name in handle.keys()})
    return None


def read_tensors(index: ShardIndex, names: list[str], dtype: torch.dtype, device: torch.device | str) -> dict[str, torch.Tensor]:
    """Read `names` from the shards (one open per shard file), cast to dtype and device."""
    from safetensors import safe_open

    missing = [n for n in names if n not in index.weight_map]
    if missing:
        raise ModelRefError(f"checkpoint {index.directory} has no tensors {missing[:4]} (of {len(missing)} missing); "
                            "is it a transformers checkpoint of this architecture?")
    by_file: dict[str, list[str]] = {}
    for name in names:
        by_file.setdefault(index.weight_map[name], []).append(name)
    tensors = {}
    for file_name, in_file in by_file.items():
        with safe_open(str(index.directory / file_name), framework="pt", device="cpu") as handle:
            for name in in_file:
                # copy=True: own the bytes, so nothing stays mapped from the shard once the layer is released
                tensors[name] = handle.get_tensor(name).to(device=device, dtype=dtype, copy=True)
    return tensors


def _set_parameter(root: nn.Module, name: str, value: torch.Tensor) -> None:
    owner_path, _, leaf = name.rpartition(".")
    owner = root.get_submodule(owner_path) if owner_path else root
    owner._parameters[leaf] = nn.Parameter(value, requires_grad=False)


class LayerWeights:
    """Reads one decoder layer's parameters from the shards on `load`, drops them on `release`.

    `n_loaded` counts layers in memory now, `peak_loaded` the most at once (tests and the
    streaming benchmark check it is 1). Loads are counted per layer, so nested `onloaded`
    blocks of the same layer read it once.
    """

    def __init__(self, index: ShardIndex, dtype: torch.dtype, device: torch.device | str) -> None:
        self.index = index
        self.dtype = dtype
        self.device = torch.device(device)
        self._depth: dict[str, int] = {}
        self._scratch: Path | None = None
        self.peak_loaded = 0
        self.n_reads = 0

    @property
    def n_loaded(self) -> int:
        return len(self._depth)

    def is_loaded(self, path: str) -> bool:
        return path in self._depth

    def load(self, layer: nn.Module, path: str) -> None:
        if path in self._depth:
            self._depth[path] += 1
            return
        names = [name for name, _ in layer.named_parameters()]
        tensors = read_tensors(self.index, [f"{path}.{n}" for n in names], self.dtype, self.device)
        for name in names:
            _set_parameter(layer, name, tensors[f"{path}.{name}"])
        self._depth[path] = 1
        self.n_reads += 1
        self.peak_loaded = max(self.peak_loaded, self.n_loaded)

    def release(self, layer: nn.Module, path: str) -> None:
        self._depth[path] -= 1
        if self._depth[path] > 0:
            return
        del self._depth[path]
        for name, param in list(layer.named_parameters()):
            _set_parameter(layer, name, torch.empty_like(param, device="meta"))

    def persist(self, layer: nn.Module, path: str) -> None:
        """Make the loaded layer's current weights (e.g. compressed ones set in place) what every
        later load reads: they are written to a scratch safetensors file (removed with the reader)
        and the index points there for this layer's tensors."""
        from safetensors.torch import save_file

        if path not in self._depth:
            raise RuntimeError(f"persist({path!r}): the layer is not loaded")
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="calderalab-layers-"))
            weakref.finalize(self, shutil.rmtree, str(self._scratch), True)
        tensors = {f"{path}.{n}": p.detach().to("cpu").contiguous() for n, p in layer.named_parameters()}
        file = self._scratch / f"{path}.safetensors"
        save_file(tensors, str(file))
        self.index = ShardIndex(self.index.directory, {**self.index.weight_map, **dict.fromkeys(tensors, str(file))})

    @contextlib.contextmanager
    def all_or_nothing(self) -> Iterator[None]:
        """Layers persisted inside the block are forgotten again if the block raises: the model then
        reads its checkpoint's weights as before."""
        before = self.index
        try:
            yield
        except BaseException:
            self.index = before
            raise


def layer_weights(model: nn.Module) -> LayerWeights | None:
    """The reader of a lazily opened model; None for a model fully in memory."""
    return getattr(model, _ATTRIBUTE, None)


@contextlib.contextmanager
def onloaded(model: nn.Module, target: Any) -> Iterator[nn.Module]:
    """Decoder layer `target` (a LayerTargets) with its weights in memory for the block; a no-op
    for a model fully in memory. Yields the layer."""
    reader = layer_weights(model)
    if reader is None:
        yield target.layer
        return
    reader.load(target.layer, target.path)
    try:
        yield target.layer
    finally:
        reader.release(target.layer, target.path)


def state_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of `model.state_dict()` in name order. On a lazy model each decoder-layer tensor
    is read from the shards (or a persisted layer) on its own, so hashing every weight never holds
    more than one tensor of the stack."""
    reader = layer_weights(model)
    for name, tensor in sorted(model.state_dict().items()):
        if tensor.is_meta and reader is not None:
            tensor = read_tensors(reader.index, [name], reader.dtype, "cpu")[name]
        yield name, tensor


@contextlib.contextmanager
def streamed_forward(model: nn.Module) -> Iterator[nn.Module]:
    """Any forward pass (generation included) works on a lazy model inside this block: each decoder
    layer is read before it runs and dropped after. Slow (every forward reads every layer), so it
    serves only short jobs such as self-generated calibration text. A no-op for an in-memory model."""
    if layer_weights(model) is None:
        yield model
        return
    from calderalab.models.layers import discover_layers

    handles = []
    for target in discover_layers(model):
        stack = contextlib.ExitStack()

        def before(_module: nn.Module, _args: Any, target: Any = target, stack: contextlib.ExitStack = stack) -> None:
            stack.enter_context(onloaded(model, target))

        def after(_module: nn.Module, _args: Any, _out: Any, stack: contextlib.ExitStack = stack) -> None:
            stack.close()

        handles += [target.layer.register_forward_pre_hook(before), target.layer.register_forward_hook(after)]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


def _skeleton(directory: Path, dtype: torch.dtype) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
    # Everything on meta: nothing is allocated (accelerate's init_empty_weights allocates each
    # parameter before moving it, which under an address-space cap fails on a large model).
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    _materialise_buffers(model)
    model.config._name_or_path = str(directory)
    if (directory / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(directory), local_files_only=True)
    return model


def _materialise_buffers(model: nn.Module) -> None:
    """Non-persistent buffers (rotary frequencies) are not in checkpoints: give them storage and let
    the model's own initialiser compute them, as `from_pretrained` does after a meta-device build."""
    for module in model.modules():
        names = [n for n in module._non_persistent_buffers_set if module._buffers.get(n) is not None]
        if names:
            for name in names:
                module._buffers[name] = torch.empty_like(module._buffers[name], device="cpu")
            model._init_weights(module)
    still_meta = [n for n, b in model.named_buffers() if b.is_meta]
    if still_meta:
        raise ModelRefError(f"cannot open {type(model).__name__} layer by layer: buffers {still_meta[:4]} stay unset")


def open_lazy(directory: Path, dtype: torch.dtype, device: torch.device | str, index: ShardIndex) -> nn.Module:
    """The model at `directory` with only what lies outside the decoder stack in memory (eval mode,
    gradients off); its decoder layers are read by `onloaded`."""
    from calderalab.models.layers import find_decoder_layers

    model = _skeleton(Path(directory), dtype)
    stack_path, _ = find_decoder_layers(model)
    outside = [n for n, _ in model.named_parameters() if not n.startswith(f"{stack_path}.")]
    present = [n for n in outside if n in index.weight_map]
    for name, tensor in read_tensors(index, present, dtype, device).items():
        _set_parameter(model, name, tensor)
    for module in model.modules():  # rotary frequencies and the like were built on the CPU
        for name, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[name] = buffer.to(device)
    model.tie_weights()  # a tied lm_head is not in the checkpoint: it shares the embedding again
    still_meta = [n for n in outside if model.get_parameter(n).is_meta]
    if still_meta:
        raise ModelRefError(f"checkpoint {directory} lacks {still_meta}: cannot open it layer by layer")
    model.eval()
    model.requires_grad_(False)
    setattr(model, _ATTRIBUTE, LayerWeights(index, dtype, device))
    return model
