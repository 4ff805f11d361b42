"""Export a (possibly compressed) model as a standard Hugging Face checkpoint.

The output is what `AutoModelForCausalLM.from_pretrained(out_dir)` (and vLLM) read: safetensors
weights (sharded with an index above `max_shard_size`), config.json, generation_config.json and
the tokenizer files. We write the files ourselves instead of calling `save_pretrained` because a
GGUF-loaded model refuses to serialise ("quantized with gguf"), and because tied embeddings make
the state dict hold one tensor under two names: we keep the first name and let transformers
re-tie on load, and we read every file back before the directory is published.

Writes are atomic: everything goes to a temporary sibling directory that is renamed into place.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import torch

from calderalab.errors import ModelRefError

log = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3
INDEX_NAME = "model.safetensors.index.json"


def _tied_embeddings(model) -> bool:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return bool(getattr(config, "tie_word_embeddings", False))


def unique_state_dict(model) -> dict[str, torch.Tensor]:
    """The state dict with tied duplicates dropped (first name kept), on CPU and contiguous.

    Tensors that share storage without the config declaring tied embeddings are saved twice
    (cloned), since transformers would not re-tie them on load.
    """
    tied = _tied_embeddings(model)
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in seen and tensor.device.type != "meta":
            if tied:
                log.debug("dropping %s: tied to %s", name, seen[key])
                continue
            tensor = tensor.clone()
        seen.setdefault(key, name)
        out[name] = tensor.detach().to("cpu").contiguous()
    return out


def _shards(tensors: dict[str, torch.Tensor], max_shard_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    return shards


def _write_weights(tensors: dict[str, torch.Tensor], directory: Path, max_shard_bytes: int) -> list[str]:
    from safetensors.torch import save_file

    shards = _shards(tensors, max_shard_bytes)
    if len(shards) == 1:
        save_file(shards[0], str(directory / "model.safetensors"), metadata={"format": "pt"})
        return ["model.safetensors"]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for file_name, shard in zip(names, shards):
        save_file(shard, str(directory / file_name), metadata={"format": "pt"})
        weight_map.update({tensor_name: file_name for tensor_name in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX_NAME).write_text(json.dumps(index, indent=2))
    return names


def _verify_weights(tensors: dict[str, torch.Tensor], directory: Path, files: list[str]) -> None:
    """Read every written tensor back and compare bit for bit (catches silently dropped tensors)."""
    from safetensors import safe_open

    found: set[str] = set()
    for file_name in files:
        with safe_open(str(directory / file_name), framework="pt") as handle:
            for name in handle.keys():
                if not torch.equal(handle.get_tensor(name), tensors[name]):
                    raise ModelRefError(f"export check failed: tensor {name} in {file_name} differs from the model")
                found.add(name)
    missing = sorted(set(tensors) - found)
    if missing:
        raise ModelRefError(f"export check failed: {len(missing)} tensors missing from the written files, e.g. {missing[:3]}")


def _write_config(model, directory: Path, dtype: torch.dtype) -> None:
    config = copy.deepcopy(model.config)
    # A GGUF-loaded config carries quantization_config={quant_method: gguf}; the exported weights
    # are plain floats, and leaving it in makes from_pretrained look for a .gguf file.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.architectures = [type(model).__name__]
    config.dtype = dtype
    config.save_pretrained(str(directory))
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        generation_config.save_pretrained(str(directory))


def _publish(tmp_dir: Path, out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{out_dir} already exists; choose another directory or pass overwrite=True")
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(out_dir, old)
        os.rename(tmp_dir, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp_dir, out_dir)


def export_checkpoint(
    model,
    tokenizer,
    out_dir: str | Path,
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write `model` (+ `tokenizer`, may be None) as a standard HF checkpoint at `out_dir`.

    `extra_files` maps file names to text written beside the checkpoint (e.g. provenance JSON).
    Returns the output directory. Raises FileExistsError if it exists and overwrite is False.
    """
    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists; choose another directory or pass overwrite=True")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp_dir.mkdir()
    try:
        tensors = unique_state_dict(model)
        dtype = next(iter(tensors.values())).dtype
        files = _write_weights(tensors, tmp_dir, max_shard_bytes)
        _verify_weights(tensors, tmp_dir, files)
        _write_config(model, tmp_dir, dtype)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp_dir))
        for name, text in (extra_files or {}).items():
            (tmp_dir / name).write_text(text)
        _publish(tmp_dir, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    log.info("exported %d tensors in %d file(s) to %s", len(tensors), len(files), out_dir)
    return out_dir
