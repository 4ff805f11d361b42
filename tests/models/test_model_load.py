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
