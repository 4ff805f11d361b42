"""Load a model reference into (model, tokenizer), in eval mode with gradients off.

GGUF models (the embedded SmolLM2 included) are de-quantised by transformers + gguf, which takes
about 20 s for SmolLM2; the de-quantised float32 copy is cached as a plain HF checkpoint under
`$CALDERALAB_CACHE/models/<stem>-<sha256[:16]>` (default ~/.cache/calderalab), written atomically
and checked tensor by tensor before it is published, so later loads take a few seconds.

Tokenizers are set up for batched generation: a pad token (eos when the model has none) and left
padding.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from calderalab.errors import ModelRefError
from calderalab.models.export import export_checkpoint
from calderalab.models.refs import ModelRef, file_sha256, model_identity, resolve_model_ref

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
CACHE_MARKER = "calderalab-cache.json"


def calderalab_cache_dir() -> Path:
    """`$CALDERALAB_CACHE`, else ~/.cache/calderalab (read at call time)."""
    env = os.environ.get("CALDERALAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "calderalab"


def gguf_cache_path(model_ref: ModelRef) -> Path:
    """Where the de-quantised copy of a GGUF model lives; keyed by the GGUF's content hash."""
    if not model_ref.is_gguf:
        raise ValueError(f"{model_ref.ref!r} is not a GGUF model (kind {model_ref.kind!r})")
    digest = file_sha256(model_ref.path)
    return calderalab_cache_dir() / "models" / f"{model_ref.path.stem}-{digest[:16]}"


def prepare_tokenizer(tokenizer, model=None):
    """Give the tokenizer a pad token and left padding (batched generation pads on the left).

    Also copies the pad id into the model's config and generation config when they lack one,
    so `generate` does not warn or guess.
    """
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ModelRefError("the tokenizer has neither a pad, eos nor unk token; cannot pad batches")
        tokenizer.pad_token = fallback
    tokenizer.padding_side = "left"
    if model is not None:
        for config in (model.config, getattr(model, "generation_config", None)):
            if config is not None and getattr(config, "pad_token_id", None) is None:
                config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


def _finish(model, tokenizer, dtype: torch.dtype, device: str):
    model = model.to(device=device, dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    return model, prepare_tokenizer(tokenizer, model)


def _from_dir(directory: Path, dtype: torch.dtype, ref: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise ModelRefError(f"cannot load {ref!r} from {directory} as a causal language model: {err}") from err
    return model, tokenizer


def _dequantize_gguf(model_ref: ModelRef, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, name = str(model_ref.path.parent), model_ref.path.name
    log.info("de-quantising %s (one-time, cached afterwards)", model_ref.path)
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=dtype, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelRefError(f"cannot load GGUF {model_ref.path}: {err}") from err
    # The weights are plain float tensors now, but transformers still marks the model as
    # "quantized with gguf", which blocks save_pretrained and dtype casts; drop the marks so a
    # fresh and a cached load give the same model object.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    model.config.architectures = [type(model).__name__]
    return model, tokenizer


def _write_gguf_cache(model_ref: ModelRef, model, tokenizer, cache_path: Path) -> None:
    marker = {
        "format": CACHE_FORMAT,
        "source": str(model_ref.path),
        "identity": model_identity(model_ref),
        "dtype": "float32",
    }
    # A directory without a valid marker is left over from an older format: replace it.
    overwrite = cache_path.exists() and not _cache_is_valid(cache_path)
    try:
        export_checkpoint(
            model, tokenizer, cache_path, overwrite=overwrite, extra_files={CACHE_MARKER: json.dumps(marker, indent=2)}
        )
    except FileExistsError:
        log.info("another process cached %s first", cache_path)  # the rename is atomic; theirs is complete
    except OSError as err:
        log.warning("could not cache the de-quantised model at %s: %s", cache_path, err)


def _cache_is_valid(cache_path: Path) -> bool:
    try:
        marker = json.loads((cache_path / CACHE_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("format") == CACHE_FORMAT


def load_gguf(model_ref: ModelRef, dtype: torch.dtype = torch.float32, use_cache: bool = True):
    """De-quantise a GGUF model, through the on-disk cache when `use_cache`."""
    cache_path = gguf_cache_path(model_ref)
    if use_cache and _cache_is_valid(cache_path):
        log.info("loading cached de-quantised copy %s", cache_path)
        return _from_dir(cache_path, dtype, model_ref.ref)
    # De-quantise in float32 so the cache holds the exact GGUF values whatever dtype was asked for.
    model, tokenizer = _dequantize_gguf(model_ref, torch.float32)
    if use_cache:
        _write_gguf_cache(model_ref, model, tokenizer, cache_path)
    return model.to(dtype), tokenizer


def load_model(ref: str | ModelRef, dtype: torch.dtype = torch.float32, device: str = "cpu", *, use_cache: bool = True):
    """Load a model reference as (model, tokenizer): eval mode, requires_grad off, left padding.

    `ref` is any form `resolve_model_ref` accepts. Raises ModelRefError when the reference does
    not resolve or transformers cannot load it as a causal LM.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    model_ref = ref if isinstance(ref, ModelRef) else resolve_model_ref(ref)
    if model_ref.is_gguf:
        model, tokenizer = load_gguf(model_ref, dtype, use_cache=use_cache)
    else:
        model, tokenizer = _from_dir(model_ref.path, dtype, model_ref.ref)
    return _finish(model, tokenizer, dtype, device)


def load_skeleton(ref: str | ModelRef):
    """The model's module structure on the meta device (no weights read): for inspection.

    Cheap even for 70B checkpoints. GGUF models use the cached copy's config when present and
    otherwise read the config from the GGUF header.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    model_ref = ref if isinstance(ref, ModelRef) else resolve_model_ref(ref)
    try:
        if model_ref.is_gguf and not _cache_is_valid(gguf_cache_path(model_ref)):
            config = AutoConfig.from_pretrained(str(model_ref.path.parent), gguf_file=model_ref.path.name)
        else:
            directory = gguf_cache_path(model_ref) if model_ref.is_gguf else model_ref.path
            config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError) as err:
        raise ModelRefError(f"cannot read the model structure of {model_ref.ref!r}: {err}") from err


def open_model(ref: str | ModelRef, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """Open a model reference for layer-by-layer work (compression) as (model, tokenizer).

    A safetensors checkpoint (a local or hub directory, or the cached de-quantised copy of a GGUF)
    opens lazily: the decoder layers stay on the meta device and `lazy.onloaded` reads one at a
    time, so a checkpoint larger than memory can be compressed. Anything else (a GGUF not cached
    yet, a .bin checkpoint) loads whole, as `load_model` does; `onloaded` is then a no-op.
    """
    from calderalab.models import lazy

    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    model_ref = ref if isinstance(ref, ModelRef) else resolve_model_ref(ref)
    directory = model_ref.path
    if model_ref.is_gguf:
        directory = gguf_cache_path(model_ref)
        if not _cache_is_valid(directory):
            return load_model(model_ref, dtype, device)
    index = lazy.shard_index(directory)
    if index is None:
        return load_model(model_ref, dtype, device)
    from transformers import AutoTokenizer

    try:
        model = lazy.open_lazy(directory, dtype, device, index)
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise ModelRefError(f"cannot open {model_ref.ref!r} from {directory} as a causal language model: {err}") from err
    return model, prepare_tokenizer(tokenizer, model)


def open_to_run(ref: str | ModelRef, dtype: torch.dtype = torch.float32, device: str = "cpu", load: str = "auto"):
    """Open a model for forward passes (sensitivity, evaluation) as (model, tokenizer).

    load = "memory": every weight in memory (`load_model`). "layers": decoder layers stay on the meta
    device and each forward reads them one at a time (`open_model`, `lazy`; a GGUF not de-quantised
    yet, or a .bin checkpoint, still loads whole). "auto": layers when the checkpoint's weight files
    exceed half of the memory this process may still use (`available_bytes`), else memory.
    """
    from calderalab.devices import check_load

    if check_load(load) == "auto":
        model_ref = ref if isinstance(ref, ModelRef) else resolve_model_ref(ref)
        size, available = checkpoint_bytes(model_ref), available_bytes()
        load = "layers" if size > available / 2 else "memory"
        log.info("--load auto: checkpoint %.2f GiB, %.2f GiB available -> %s", size / 2**30, available / 2**30, load)
        ref = model_ref
    if load == "layers":
        return open_model(ref, dtype, device)
    return load_model(ref, dtype, device)


def checkpoint_bytes(model_ref: ModelRef) -> int:
    """Bytes of the weight files a load would read (the de-quantised copy of a GGUF once cached)."""
    directory = model_ref.path
    if model_ref.is_gguf:
        cached = gguf_cache_path(model_ref)
        if not _cache_is_valid(cached):
            return model_ref.path.stat().st_size
        directory = cached
    return sum(p.stat().st_size for p in Path(directory).glob("*.safetensors")) or \
        sum(p.stat().st_size for p in Path(directory).glob("*.bin"))


def available_bytes() -> int:
    """Memory this process may still take: MemAvailable, capped by an address-space limit
    (`prlimit --as`, `ulimit -v`) less what the process has mapped already."""
    import resource

    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        try:
            mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            mapped = 0
        available = min(available, max(soft - mapped, 0))
    return available
