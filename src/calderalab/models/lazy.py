"""Larger-than-memory checkpoints: the model skeleton in memory, decoder layers read on demand.

`open_lazy(directory)` builds the model on the meta device (rotary frequencies and other
non-persistent buffers are then computed for real), loads what lives outside the decoder stack (embeddings, final
norm, lm_head), and attaches a `LayerWeights` reader. Work on a decoder layer happens inside
`onloaded(model, target)`: the layer's parameters are read from the safetensors shards, cast to
the model's dtype and device, and put back on the meta device when the block ends. Peak memory
is then about one decoder layer plus whatever the caller keeps (the way llm-compressor and
GPTQModel onload layers sequentially).

Every decoder layer's `forward` is wrapped the same way, so any forward pass (generation,
sensitivity, evaluation) works on a lazy model as on any other, reading each layer as the pass
reaches it (slow: every pass reads every layer; the page cache makes repeats cheap). The wrapper
sits inside the module call, after forward pre-hooks, so a hook that stops a pass early never
leaves a layer loaded. Weights that replace a layer's (stored artifacts applied or swapped in) are
written to a scratch safetensors file by `LayerWeights.persist`, and later loads read that file
instead of the checkpoint (accelerate's offload folder, one layer at a time); `restoring` forgets
them again.

On a model that is fully in memory (`load_model`, a tiny test model) `onloaded` does nothing,
so compression has one code path whichever way the model was opened.

Imports torch and safetensors; transformers only inside `open_lazy`.
"""

from __future__ import annotations

import contextlib
import functools
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
        with mapped_reads(), safe_open(str(index.directory / file_name), framework="pt", device="cpu") as handle:
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
        self._loaded: dict[str, nn.Module] = {}
        self._scratch: Path | None = None
        self._n_persisted = 0
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
        self._loaded[path] = layer
        self.n_reads += 1
        self.peak_loaded = max(self.peak_loaded, self.n_loaded)

    def release(self, layer: nn.Module, path: str) -> None:
        self._depth[path] -= 1
        if self._depth[path] > 0:
            return
        del self._depth[path]
        del self._loaded[path]
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
        self._n_persisted += 1  # a new file each time: an outer swap's file must survive an inner one
        file = self._scratch / f"{path}.{self._n_persisted}.safetensors"
        save_file(tensors, str(file))
        self.index = ShardIndex(self.index.directory, {**self.index.weight_map, **dict.fromkeys(tensors, str(file))})

    @contextlib.contextmanager
    def all_or_nothing(self) -> Iterator[None]:
        """Layers persisted inside the block are forgotten again if the block raises: the model then
        reads the weights it read before."""
        before = self.index
        try:
            yield
        except BaseException:
            self._reset(before)
            raise

    @contextlib.contextmanager
    def restoring(self) -> Iterator[None]:
        """Layers persisted inside the block are forgotten when it ends, however it ends."""
        before = self.index
        try:
            yield
        finally:
            self._reset(before)

    def _reset(self, index: ShardIndex) -> None:
        """Read from `index` again; a layer in memory now is re-read from it (so it holds what
        later loads return)."""
        changed = {name for name, file in self.index.weight_map.items() if index.weight_map.get(name) != file}
        dropped = {self.index.weight_map[name] for name in changed} - set(index.weight_map.values())
        self.index = index
        for file in dropped:  # scratch files nothing reads any more
            Path(file).unlink(missing_ok=True)
        for path, layer in list(self._loaded.items()):
            names = [f"{path}.{n}" for n, _ in layer.named_parameters()]
            if changed.intersection(names):
                for name, tensor in read_tensors(index, names, self.dtype, self.device).items():
                    _set_parameter(layer, name[len(path) + 1:], tensor)

    def streamed(self, forward: Any, layer: nn.Module, path: str) -> Any:
        """`forward` of a decoder layer, reading the layer for the call and releasing it after."""

        @functools.wraps(forward)
        def run(*args: Any, **kwargs: Any) -> Any:
            self.load(layer, path)
            try:
                return forward(*args, **kwargs)
            finally:
                self.release(layer, path)

        return run


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


MMAP_THRESHOLD_READ = 128 * 1024  # glibc's start value: every block this large is its own mapping
MMAP_THRESHOLD_COMPUTE = 32 * 1024 * 1024  # glibc's ceiling for its dynamic threshold on 64-bit
_pinned = False  # set by `pin_mmap_threshold`: the process's mallopt now follows `mapped_reads`


def _mallopt(threshold: int) -> bool:
    """glibc's mmap threshold set to `threshold` and its trim threshold to twice that (as its dynamic rule
    pairs them); False where there is no glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, threshold)) and bool(libc.mallopt(-1, 2 * threshold))  # M_MMAP_, M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


def pin_mmap_threshold() -> bool:
    """Fix glibc's thresholds for a process that streams layers: reads get their own mappings
    (`mapped_reads`), everything else the heap, up to MMAP_THRESHOLD_COMPUTE per block.

    Why: glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB), after
    which a layer's tensors of a few MiB come from the heap, and reading and dropping layers one after
    another fragments it: measured on a 153-layer hidden-512 checkpoint (12.8 MB layers,
    `benchmarks/streaming.py --size-gb 2 --hidden 512`), peak RSS 0.83 GiB with the dynamic threshold,
    0.57 GiB with every block of 128 KiB or more mapped. But mapping EVERY such block made each of the
    decompositions' and forwards' MiB-sized temporaries a fresh, zero-filled mapping: a SmolLM2
    compression ran 297 s instead of 182 s, a third of it in the kernel. So only the layer reads are
    mapped. Returns False where there is no glibc."""
    global _pinned
    _pinned = _mallopt(MMAP_THRESHOLD_COMPUTE)
    return _pinned


@contextlib.contextmanager
def mapped_reads() -> Iterator[None]:
    """Inside: blocks of MMAP_THRESHOLD_READ or more are their own mappings, returned to the system when
    freed (the tensors of a streamed layer); after: the compute threshold again. No-op unless pinned."""
    if not _pinned:
        yield
        return
    _mallopt(MMAP_THRESHOLD_READ)
    try:
        yield
    finally:
        _mallopt(MMAP_THRESHOLD_COMPUTE)


def open_lazy(directory: Path, dtype: torch.dtype, device: torch.device | str, index: ShardIndex) -> nn.Module:
    """The model at `directory` with only what lies outside the decoder stack in memory (eval mode,
    gradients off); its decoder layers are read by `onloaded`."""
    from calderalab.models.layers import find_decoder_layers

    pin_mmap_threshold()  # process-wide: a lazy model is the large-model path

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
    reader = LayerWeights(index, dtype, device)
    for i, layer in enumerate(model.get_submodule(stack_path)):
        layer.forward = reader.streamed(layer.forward, layer, f"{stack_path}.{i}")
    setattr(model, _ATTRIBUTE, reader)
    return model
