import math

import pytest
import torch

from calderalab.eval.perplexity import perplexity, sliding_windows


class CharTokenizer:
    """Tokenises text to byte values mod vocab (no special tokens)."""

    def __call__(self, text, return_tensors="pt", add_special_tokens=False):
        return {"input_ids": torch.tensor([[b % 97 for b in text.encode()]])}


def tiny_llama():
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return transformers.LlamaForCausalLM(cfg).eval()


TEXT = "The quick brown fox jumps over the lazy dog. " * 3


@pytest.mark.parametrize("n,ctx,stride", [(10, 4, 2), (100, 16, 16), (37, 8, 3), (5, 8, 4), (40, 8, 8)])
def test_windows_score_each_token_at_most_once_with_context(n, ctx, stride):
    windows = sliding_windows(n, ctx, stride)
    scored = []
    for begin, end, trg in windows:
        assert end - begin <= ctx
        assert end - trg > begin  # every scored token has at least one token of context in its window
        scored.extend(range(end - trg, end))
    assert scored == sorted(set(scored))
    if stride < ctx:
        assert scored == list(range(1, n))  # every token but the first, exactly once
    else:  # disjoint chunks: all but each chunk's first token
        assert scored == [i for i in range(n) if i % ctx != 0]


def test_full_context_equals_hf_loss():
    model = tiny_llama()
    tok = CharTokenizer()
    ids = tok(TEXT)["input_ids"]
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    res = perplexity(model, tok, TEXT, context_len=ids.shape[1], stride=ids.shape[1])
    assert res.n_scored_tokens == ids.shape[1] - 1
    assert res.perplexity == pytest.approx(math.exp(loss), rel=1e-5)


def test_sliding_matches_token_by_token_reference():
    model = tiny_llama()
    tok = CharTokenizer()
    ids = tok(TEXT)["input_ids"][0][:60]
    for ctx, stride in ((16, 5), (16, 16)):
        _check_against_reference(model, tok, ids, ctx, stride)


def _check_against_reference(model, tok, ids, ctx, stride):
    nll, count = 0.0, 0
    with torch.no_grad():
        for begin, end, trg in sliding_windows(len(ids), ctx, stride):
            for pos in range(end - trg, end):  # predict ids[pos] from ids[begin:pos]
                logits = model(input_ids=ids[begin:pos].unsqueeze(0)).logits[0, -1].double()
                nll -= torch.log_softmax(logits, -1)[ids[pos]].item()
                count += 1
    ref = math.exp(nll / count)
    for batch_size in (1, 3, 8):
        res = perplexity(model, tok, TEXT, context_len=ctx, stride=stride, max_tokens=60, batch_size=batch_size)
        assert res.perplexity == pytest.approx(ref, rel=1e-5)


def test_bad_settings():
    model, tok = tiny_llama(), CharTokenizer()
    with pytest.raises(ValueError, match="stride"):
        perplexity(model, tok, TEXT, context_len=8, stride=9)
    with pytest.raises(ValueError, match="max_tokens"):
        perplexity(model, tok, TEXT, max_tokens=1)
