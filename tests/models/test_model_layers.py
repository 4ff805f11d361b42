"""Layer discovery on tiny models of every supported family, and clear errors for the rest."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from calderalab.models import MODULE_NAMES, discover_layers, num_layers, target_linear, tiny_model
from calderalab.models.layers import UnsupportedModelError
from calderalab.models.tiny import FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
def test_discovery_finds_seven_targets_with_shapes(family):
    hidden, n_heads, n_kv, inter = 64, 4, 2, 96
    model, _ = tiny_model(family, n_layers=3, hidden=hidden, intermediate=inter, n_heads=n_heads, n_kv_heads=n_kv, with_tokenizer=False)
    layers = discover_layers(model)
    assert num_layers(model) == 3 == len(layers)
    head_dim = hidden // n_heads
    expected = {
        "q": (hidden, hidden), "k": (n_kv * head_dim, hidden), "v": (n_kv * head_dim, hidden),
        "o": (hidden, hidden), "gate": (inter, hidden), "up": (inter, hidden), "down": (hidden, inter),
    }
    leaf = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
            "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
    named = dict(model.named_modules())
    for i, targets in enumerate(layers):
        assert targets.index == i and targets.layer is model.model.layers[i]
        assert targets.path == f"model.layers.{i}"
        assert tuple(targets.modules) == MODULE_NAMES
        assert targets.shapes == expected
        for name in MODULE_NAMES:
            qualified = targets.qualified_names[name]
            assert qualified == f"model.layers.{i}.{leaf[name]}"
            assert named[qualified] is targets.modules[name]
            assert tuple(targets.modules[name].weight.shape) == expected[name]
            assert target_linear(model, i, name) is targets.modules[name]


def test_embeddings_norms_and_lm_head_are_never_targets():
    model, _ = tiny_model("gemma", with_tokenizer=False)
    targets = {id(m) for t in discover_layers(model) for m in t.modules.values()}
    assert id(model.lm_head) not in targets
    assert all(id(m) not in targets for m in model.modules() if isinstance(m, (nn.Embedding,)) or "Norm" in type(m).__name__)
    assert len(targets) == 7 * num_layers(model)


def test_module_names_match_core():
    from calderalab import core

    assert core.MODULE_NAMES == MODULE_NAMES


def test_bad_layer_says_layer_count():
    model, _ = tiny_model("llama", n_layers=4, with_tokenizer=False)
    with pytest.raises(ValueError, match=r"layer 4 is out of range: the model has 4 decoder layers"):
        target_linear(model, 4, "q")
    with pytest.raises(ValueError, match="out of range"):
        target_linear(model, -1, "q")
    with pytest.raises(ValueError, match="must be an integer"):
        target_linear(model, "3", "q")


def test_bad_module_lists_valid_names():
    model, _ = tiny_model("llama", with_tokenizer=False)
    with pytest.raises(ValueError, match="unknown target module 'q_proj': valid names are q, k, v, o, gate, up, down"):
        target_linear(model, 0, "q_proj")


def test_numpy_style_integer_layer_is_accepted():
    model, _ = tiny_model("llama", with_tokenizer=False)
    assert target_linear(model, torch.tensor(2).item(), "down") is model.model.layers[2].mlp.down_proj


def test_gpt2_conv1d_is_rejected_clearly():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=32))
    with pytest.raises(UnsupportedModelError, match="Conv1D"):
        discover_layers(model)


def test_fused_qkv_is_rejected_clearly():
    from transformers import Phi3Config, Phi3ForCausalLM

    config = Phi3Config(num_hidden_layers=2, hidden_size=32, intermediate_size=48, num_attention_heads=2,
                        num_key_value_heads=2, vocab_size=50, pad_token_id=0)
    with pytest.raises(UnsupportedModelError, match="fused projection"):
        discover_layers(Phi3ForCausalLM(config))


def test_non_gated_mlp_is_rejected_with_found_linears():
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(num_hidden_layers=2, hidden_size=32, ffn_dim=48, num_attention_heads=2, vocab_size=50,
                       word_embed_proj_dim=32, max_position_embeddings=32)
    with pytest.raises(UnsupportedModelError, match=r"gate: none") as info:
        discover_layers(OPTForCausalLM(config))
    assert "fc1" in str(info.value)


def test_model_without_layer_list_is_rejected():
    with pytest.raises(UnsupportedModelError, match="no decoder layer list"):
        discover_layers(nn.Sequential(nn.Linear(4, 4)))
