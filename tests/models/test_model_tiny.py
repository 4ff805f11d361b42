"""Tiny models and tokenizer: seeded, self-contained, usable for generation."""

from __future__ import annotations

import pytest
import torch

from calderalab.models import tiny_model, tiny_tokenizer


def test_same_seed_same_weights_and_global_rng_untouched():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, _ = tiny_model("mistral", seed=7, with_tokenizer=False)
    assert torch.equal(torch.rand(1), expected_next)
    b, _ = tiny_model("mistral", seed=7, with_tokenizer=False)
    c, _ = tiny_model("mistral", seed=8, with_tokenizer=False)
    for (name, x), y, z in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(x, y), name
    assert not torch.equal(a.model.layers[0].self_attn.q_proj.weight, c.model.layers[0].self_attn.q_proj.weight)


def test_tokenizer_round_trips_and_pads_left():
    tok = tiny_tokenizer()
    text = "A 15% coupon on $20.00 → 4:15 PM; ü"
    assert tok.decode(tok(text).input_ids) == text
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    batch = tok(["a", "abcd"], padding=True, return_tensors="pt")
    assert batch.input_ids[0, :3].tolist() == [0, 0, 0] and batch.attention_mask[0].tolist() == [0, 0, 0, 1]


def test_chat_template_and_generation_run():
    model, tok = tiny_model("llama", n_layers=2)
    messages = [{"role": "user", "content": "What is 2+2?"}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    batch = tok([prompt, "short"], padding=True, return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape == (2, batch.input_ids.shape[1] + 4)
    again = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert torch.equal(out, again)


def test_bad_family_and_sizes_are_rejected():
    with pytest.raises(ValueError, match="unknown tiny model family 'gpt2'"):
        tiny_model("gpt2")
    with pytest.raises(ValueError, match="must divide"):
        tiny_model("llama", hidden=30, n_heads=4)
