"""Tiny random decoder models and a tiny byte-level tokenizer, built in code (no downloads).

For tests across the project: `tiny_model("llama")` gives a 4-layer float32 Llama with a real
transformers config and seeded weights; `tiny_tokenizer()` gives a PreTrainedTokenizerFast over
the 256 byte symbols plus special tokens, with a ChatML-style chat template, so end-to-end
generation and choice scoring run without files.
"""

from __future__ import annotations

from typing import Literal

import torch

Family = Literal["llama", "qwen2", "qwen3", "mistral", "gemma"]
FAMILIES: tuple[str, ...] = ("llama", "qwen2", "qwen3", "mistral", "gemma")

SPECIAL_TOKENS = ("<pad>", "<|im_start|>", "<|im_end|>", "<unk>")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_tokenizer():
    """A byte-level PreTrainedTokenizerFast: any text round-trips; vocab = 4 specials + 256 bytes.

    pad = "<pad>" (id 0), bos = "<|im_start|>" (1), eos = "<|im_end|>" (2), unk = "<unk>" (3);
    left padding, as the eval backends expect. Deterministic: no training, no merges.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({symbol: len(SPECIAL_TOKENS) + i for i, symbol in enumerate(alphabet)})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_config(
    family: str,
    *,
    n_layers: int = 4,
    hidden: int = 64,
    intermediate: int | None = None,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    vocab_size: int = 260,
):
    """The transformers config of a tiny model of `family` (validated)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny model family {family!r}: choose one of {', '.join(FAMILIES)}")
    if n_layers < 1 or hidden < 1 or vocab_size < 1:
        raise ValueError(f"n_layers, hidden and vocab_size must be positive, got {n_layers}, {hidden}, {vocab_size}")
    if hidden % n_heads or n_heads % n_kv_heads:
        raise ValueError(f"hidden ({hidden}) must divide by n_heads ({n_heads}) and n_heads by n_kv_heads ({n_kv_heads})")
    import transformers

    cls = {
        "llama": transformers.LlamaConfig,
        "qwen2": transformers.Qwen2Config,
        "qwen3": transformers.Qwen3Config,
        "mistral": transformers.MistralConfig,
        "gemma": transformers.GemmaConfig,
    }[family]
    return cls(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate or 2 * hidden + hidden // 2,  # not a multiple of hidden: catches transposes
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        head_dim=hidden // n_heads,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        # Larger than the usual 0.02 so the tiny model's logits are not all alike.
        initializer_range=0.2,
        tie_word_embeddings=family == "gemma",
    )


def tiny_model(
    family: str = "llama",
    n_layers: int = 4,
    seed: int = 0,
    hidden: int = 64,
    *,
    intermediate: int | None = None,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    with_tokenizer: bool = True,
):
    """(model, tokenizer or None): a seeded float32 tiny decoder of `family`, eval mode, no grad.

    The same (family, sizes, seed) always gives the same weights; the global RNG is untouched.
    With `with_tokenizer` the vocabulary matches `tiny_tokenizer()` (260 tokens).
    """
    from transformers import AutoModelForCausalLM

    tokenizer = tiny_tokenizer() if with_tokenizer else None
    config = tiny_config(
        family,
        n_layers=n_layers,
        hidden=hidden,
        intermediate=intermediate,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        vocab_size=len(tokenizer) if tokenizer is not None else 260,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer
