"""Test helpers for the eval tests: a character-level tokenizer with a chat template and tiny Llama models.

Built in code (no downloads). The char tokenizer decodes exactly what it encodes, which makes
generated text predictable; the `scripted` model is a planted bigram machine whose greedy output
is known in advance.
"""

from __future__ import annotations

import string

import torch

SPECIALS = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
CHARS = sorted(set(string.ascii_letters + string.digits + string.punctuation + " \n"))
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def char_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=["<|user|>", "<|assistant|>"],
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_llama(vocab_size: int, seed: int = 0, hidden: int = 128, n_layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # random init is small; scale up so greedy choices are far from ties
        model.lm_head.weight.mul_(8.0)
    return model


def scripted_llama(tokenizer, script: dict[str, str]):
    """A Llama whose greedy next token depends only on the current token: next = script[current].

    Every decoder layer outputs zero (o_proj, down_proj = 0), so the last hidden state is the
    normalised embedding; embeddings are one-hot and lm_head maps token a to token script[a].
    """
    vocab = len(tokenizer)
    model = tiny_llama(vocab, hidden=max(128, vocab))
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        hidden = model.config.hidden_size
        model.model.embed_tokens.weight.copy_(torch.eye(vocab, hidden))
        model.lm_head.weight.zero_()
        for src, dst in script.items():
            a, b = tokenizer.convert_tokens_to_ids(src), tokenizer.convert_tokens_to_ids(dst)
            model.lm_head.weight[b, a] = 1.0
    return model


def chain(text: str, start: str = "<|assistant|>", end: str | None = None) -> dict[str, str]:
    """Script that, from `start`, emits `text` (distinct chars) and then `end` (default: loop on last)."""
    script, prev = {}, start
    for ch in text:
        script[prev] = ch
        prev = ch
    script[prev] = end if end is not None else prev
    return script
