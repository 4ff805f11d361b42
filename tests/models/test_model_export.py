"""Export round trip: AutoModelForCausalLM.from_pretrained reads back identical logits."""

from __future__ import annotations

import json

import pytest
import torch

from calderalab.models import export_checkpoint, set_weights, target_linear, tiny_model
from calderalab.models.export import unique_state_dict


def _reload(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32), AutoTokenizer.from_pretrained(str(path))


@pytest.mark.parametrize("family", ["llama", "gemma"])  # gemma ties embeddings
def test_export_round_trip_identical_logits(family, tmp_path):
    model, tokenizer = tiny_model(family, n_layers=2)
    W = torch.randn(target_linear(model, 1, "gate").weight.shape, generator=torch.Generator().manual_seed(0))
    set_weights(model, {(1, "gate"): W})  # an edited model, as after compression
    out = export_checkpoint(model, tokenizer, tmp_path / "ckpt")
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    loaded, loaded_tok = _reload(out)
    ids = tokenizer(["hello world", "2+2="], padding=True, return_tensors="pt")
    assert torch.equal(model(**ids).logits, loaded(**ids).logits)
    assert torch.equal(target_linear(loaded, 1, "gate").weight, W)
    assert loaded_tok("any text ü").input_ids == tokenizer("any text ü").input_ids
    assert loaded_tok.chat_template == tokenizer.chat_template
    assert loaded_tok.padding_side == "left"


def test_tied_embeddings_are_stored_once():
    model, _ = tiny_model("gemma", n_layers=1)
    tensors = unique_state_dict(model)
    assert "lm_head.weight" not in tensors and "model.embed_tokens.weight" in tensors


def test_untied_shared_storage_is_saved_twice():
    model, _ = tiny_model("llama", n_layers=1)
    model.lm_head.weight = model.model.embed_tokens.weight  # shared, but config says untied
    tensors = unique_state_dict(model)
    assert torch.equal(tensors["lm_head.weight"], tensors["model.embed_tokens.weight"])


def test_sharded_export_loads(tmp_path):
    model, tokenizer = tiny_model("qwen3", n_layers=2)
    out = export_checkpoint(model, tokenizer, tmp_path / "sharded", max_shard_bytes=64 * 1024)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    loaded, _ = _reload(out)
    ids = torch.arange(1, 12)[None]
    assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_existing_directory_is_refused_unless_overwrite(tmp_path):
    model, tokenizer = tiny_model("llama", n_layers=1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="already exists"):
        export_checkpoint(model, tokenizer, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").exists()
    export_checkpoint(model, tokenizer, tmp_path / "out", overwrite=True)
    assert not (tmp_path / "out" / "keep.txt").exists() and (tmp_path / "out" / "model.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp dirs left behind
