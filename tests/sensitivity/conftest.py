"""Test helpers for sensitivity tests: a tiny random Llama and a weight swap (until calderalab.models is merged)."""

from __future__ import annotations

import contextlib

import pytest
import torch

NAMES = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
         "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}


def tiny_llama(n_layers: int = 4, seed: int = 0, vocab: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def linear(model, layer: int, name: str) -> torch.nn.Linear:
    return model.model.layers[layer].get_submodule(NAMES[name])


@contextlib.contextmanager
def swap(model, mapping):
    saved = {key: linear(model, *key).weight.data.clone() for key in mapping}
    try:
        for key, w in mapping.items():
            linear(model, *key).weight.data.copy_(w)
        yield model
    finally:
        for key, w in saved.items():
            linear(model, *key).weight.data.copy_(w)


@pytest.fixture
def make_tiny_llama():
    return tiny_llama


@pytest.fixture
def swap_weights():
    return swap


@pytest.fixture
def linear_of():
    return linear
