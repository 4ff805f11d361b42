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


def test_ratio_interval_pairs_windows():
    from dataclasses import replace

    from calderalab.eval.perplexity import ratio_interval

    model, tok = tiny_llama(), CharTokenizer()
    base = perplexity(model, tok, TEXT, context_len=16, stride=16)
    assert len(base.window_nll) == base.n_windows and sum(base.window_tokens) == base.n_scored_tokens
    assert math.fsum(base.window_nll) == pytest.approx(base.nll_sum)
    ratio, lo, hi = ratio_interval(base, base)
    assert (ratio, lo, hi) == (1.0, 1.0, 1.0)  # identical windows: no spread at all
    # every window 0.1 nats per token worse: the ratio is exactly e^0.1 in every resample
    worse_nll = tuple(n + 0.1 * t for n, t in zip(base.window_nll, base.window_tokens))
    worse = replace(base, window_nll=worse_nll, perplexity=math.exp(math.fsum(worse_nll) / base.n_scored_tokens))
    ratio, lo, hi = ratio_interval(base, worse)
    assert ratio == pytest.approx(math.exp(0.1)) and lo == pytest.approx(math.exp(0.1)) and hi == pytest.approx(math.exp(0.1))
    # one window much worse: the interval widens around the point ratio
    uneven = tuple(n + (5.0 * t if i == 0 else 0.0) for i, (n, t) in enumerate(zip(base.window_nll, base.window_tokens)))
    skew = replace(base, window_nll=uneven, perplexity=math.exp(math.fsum(uneven) / base.n_scored_tokens))
    ratio, lo, hi = ratio_interval(base, skew)
    assert lo < ratio < hi and lo >= 1.0
    other = perplexity(model, tok, TEXT, context_len=8, stride=8)
    with pytest.raises(ValueError, match="same windows"):
        ratio_interval(base, other)
