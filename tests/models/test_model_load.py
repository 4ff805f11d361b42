"""load_model on local and (offline) hub-cached checkpoints built from tiny models; tokenizer setup."""

from __future__ import annotations

import shutil

import pytest
import torch

from calderalab.errors import ModelRefError
from calderalab.models import export_checkpoint, load_model, prepare_tokenizer, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    model, tokenizer = tiny_model("mistral", n_layers=2)
    tokenizer.padding_side = "right"  # load_model must set left padding itself
    path = export_checkpoint(model, tokenizer, tmp_path_factory.mktemp("ckpt") / "tiny-mistral")
    return model, path


def test_local_directory_loads_eval_mode_same_logits(tiny_dir):
    original, path = tiny_dir
    model, tokenizer = load_model(str(path))
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert tokenizer.padding_side == "left"
    ids = torch.arange(3, 20)[None]
    assert torch.equal(model(ids).logits, original(ids).logits)


def test_hub_id_loads_from_cache_snapshot_without_network(tiny_dir, tmp_path, monkeypatch):
    _, path = tiny_dir
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    repo = tmp_path / "hub" / "models--Org--Tiny"
    commit = "c" * 40
    shutil.copytree(path, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    model, _ = load_model("Org/Tiny", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16 and model.config.model_type == "mistral"


def test_bad_dtype_and_broken_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="floating torch.dtype"):
        load_model("smollm2", dtype=torch.int8)
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(ModelRefError, match="cannot load"):
        load_model(str(tmp_path))


def test_prepare_tokenizer_falls_back_to_eos_and_pads_left():
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = None
    tokenizer.padding_side = "right"
    model, _ = tiny_model("llama", n_layers=1, with_tokenizer=False)
    model.config.pad_token_id = None
    model.generation_config.pad_token_id = None
    prepare_tokenizer(tokenizer, model)
    assert tokenizer.pad_token == "<|im_end|>" and tokenizer.padding_side == "left"
    assert model.config.pad_token_id == 2 == model.generation_config.pad_token_id


def test_importing_models_package_is_cheap():
    import subprocess
    import sys

    code = (
        "import sys, calderalab.models, calderalab.models.refs; "
        "assert 'transformers' not in sys.modules and 'torch' not in sys.modules, 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_gguf_cache_write_replaces_stale_directory_and_loads(tmp_path, monkeypatch):
    """The cache write path without a real GGUF: a tiny model stands in for the de-quantised one."""
    from calderalab.models import load as load_module
    from calderalab.models.refs import resolve_model_ref

    monkeypatch.setenv("CALDERALAB_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF fake")
    model_ref = resolve_model_ref(str(fake))
    cache_path = load_module.gguf_cache_path(model_ref)
    assert cache_path.parent == tmp_path / "cache" / "models" and cache_path.name.startswith("fake-")
    cache_path.mkdir(parents=True)
    (cache_path / "partial.bin").write_text("stale")  # no marker: not a valid cache
    model, tokenizer = tiny_model("llama", n_layers=1)
    load_module._write_gguf_cache(model_ref, model, tokenizer, cache_path)
    assert load_module._cache_is_valid(cache_path) and not (cache_path / "partial.bin").exists()
    loaded, _ = load_model(model_ref)  # served from the cache: the fake file is never parsed
    ids = torch.arange(3, 9)[None]
    assert torch.equal(loaded(ids).logits, model(ids).logits)
