"""A model against its original: KL and top-1 from the cached reference equal a brute-force
computation from two full forward passes; an unchanged model scores KL exactly 0 and top-1 exactly 1."""

import copy

import pytest
import torch
import torch.nn.functional as F

from calderalab.eval import fidelity
from calderalab.eval.fidelity import build_reference, load_or_build_reference, measure_against
from calderalab.eval.perplexity import sliding_windows


def tiny_llama(seed=0):
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # peaked distributions: KL and argmax changes are far from rounding
    return model


IDS = torch.randint(0, 97, (150,), generator=torch.Generator().manual_seed(1))
CTX, STRIDE, BATCH = 32, 16, 3


def perturbed(model, scale=0.3):
    other = copy.deepcopy(model)
    with torch.no_grad():
        W = other.model.layers[1].mlp.down_proj.weight
        W.add_(scale * W.abs().mean() * torch.randn(W.shape, generator=torch.Generator().manual_seed(2)))
    return other


def brute_force(original, other):
    """Per window: Σ KL(P_orig ‖ P_other) and argmax agreements at the scored positions, from .logits."""
    kls, agrees = [], []
    for begin, end, trg in sliding_windows(IDS.numel(), CTX, STRIDE):
        with torch.no_grad():
            lp = F.log_softmax(original(input_ids=IDS[None, begin:end]).logits[0].double(), -1)
            lq = F.log_softmax(other(input_ids=IDS[None, begin:end]).logits[0].double(), -1)
        rows = slice(end - begin - 1 - trg, end - begin - 1)  # position t predicts token t+1
        kls.append((lp.exp() * (lp - lq))[rows].sum().item())
        agrees.append(int((lp.argmax(-1) == lq.argmax(-1))[rows].sum()))
    return kls, agrees


def test_unchanged_model_has_zero_kl_and_full_agreement(tmp_path):
    model = tiny_llama()
    reference = load_or_build_reference(model, IDS, CTX, STRIDE, tmp_path, batch_size=BATCH)
    result = measure_against(model, reference, IDS, batch_size=BATCH)
    assert all(kl == 0.0 for kl in result.window_kl)
    assert result.window_top1 == result.perplexity.window_tokens
    assert result.kl_interval() == (0.0, 0.0, 0.0) and result.top1_interval() == (1.0, 1.0, 1.0)
    assert result.perplexity.window_nll == reference.baseline.window_nll
    assert result.ratio_interval() == (1.0, 1.0, 1.0)


def test_perturbed_model_kl_and_top1_equal_brute_force(tmp_path):
    model = tiny_llama()
    reference = load_or_build_reference(model, IDS, CTX, STRIDE, tmp_path, batch_size=BATCH)
    other = perturbed(model)
    result = measure_against(other, reference, IDS, batch_size=BATCH)
    kls, agrees = brute_force(model, other)
    assert all(kl > 0 for kl in result.window_kl)
    torch.testing.assert_close(torch.tensor(result.window_kl, dtype=torch.float64), torch.tensor(kls, dtype=torch.float64), rtol=1e-4, atol=1e-7)
    assert list(result.window_top1) == agrees and sum(agrees) < result.n_scored_tokens
    mean, lo, hi = result.kl_interval()
    assert mean == pytest.approx(sum(kls) / result.n_scored_tokens, rel=1e-4) and 0 < lo <= mean <= hi
    top1, lo1, hi1 = result.top1_interval()
    assert top1 == sum(agrees) / result.n_scored_tokens and lo1 <= top1 <= hi1
    # a stronger perturbation is further from the original
    assert measure_against(perturbed(model, 2.0), reference, IDS, batch_size=BATCH).kl_interval()[0] > mean


def test_reference_is_cached_per_model_and_window_set(tmp_path, monkeypatch):
    model = tiny_llama()
    first = load_or_build_reference(model, IDS, CTX, STRIDE, tmp_path, batch_size=BATCH)
    assert len(list(tmp_path.glob("reference-*.pt"))) == 1

    def no_build(*args, **kwargs):
        raise AssertionError("the cached reference should have been read")

    monkeypatch.setattr(fidelity, "build_reference", no_build)
    again = load_or_build_reference(model, IDS, CTX, STRIDE, tmp_path, batch_size=BATCH)
    assert again.baseline == first.baseline and again.head_fingerprint == first.head_fingerprint
    assert all(torch.equal(a, b) for a, b in zip(again.head_inputs, first.head_inputs))
    monkeypatch.undo()
    load_or_build_reference(model, IDS, CTX, CTX, tmp_path, batch_size=BATCH)  # another window set
    load_or_build_reference(perturbed(model), IDS, CTX, STRIDE, tmp_path, batch_size=BATCH)  # another model
    assert len(list(tmp_path.glob("reference-*.pt"))) == 3


def test_other_head_or_other_windows_are_refused():
    model = tiny_llama()
    reference = build_reference(model, IDS, CTX, STRIDE, batch_size=BATCH)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.lm_head.weight.mul_(1.01)
    with pytest.raises(ValueError, match="output embedding differs"):
        measure_against(other, reference, IDS)
    with pytest.raises(ValueError, match="other windows"):
        measure_against(model, reference, IDS[:100])


def test_logit_softcap_after_the_head_is_refused():
    import transformers

    torch.manual_seed(0)
    cfg = transformers.Gemma2Config(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                    num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                    max_position_embeddings=256, final_logit_softcapping=0.5)
    model = transformers.Gemma2ForCausalLM(cfg).eval()
    with pytest.raises(ValueError, match="softcap"):
        build_reference(model, IDS, CTX, STRIDE)


def _planted_result(window_kl_per_token: list[float], tokens: int = 500):
    """A FidelityResult whose windows have the given KL per token (perplexity fields are placeholders)."""
    from calderalab.eval.fidelity import FidelityResult
    from calderalab.eval.perplexity import PerplexityResult

    n = len(window_kl_per_token)
    ppl = PerplexityResult(20.0, 3.0 * n * tokens, n * tokens, n, 512, 512, tuple([3.0 * tokens] * n), tuple([tokens] * n))
    return FidelityResult(ppl, ppl, tuple(k * tokens for k in window_kl_per_token), tuple([tokens // 2] * n))


def test_paired_line_with_a_margin_calls_only_changes_beyond_it():
    """A planted +0.005 nats/token shift on every window: the window interval alone calls it higher;
    against a run-to-run margin of 0.0067 it is no change; a +0.02 shift clears that margin."""
    from calderalab.eval.fidelity import paired_kl_line

    g = torch.Generator().manual_seed(0)
    base = (0.10 + 0.02 * torch.rand(40, generator=g)).tolist()
    jitter = (0.0005 * torch.randn(40, generator=g)).tolist()
    small = _planted_result([b + 0.005 + j for b, j in zip(base, jitter)])
    large = _planted_result([b + 0.02 + j for b, j in zip(base, jitter)])
    fixed = _planted_result(base)
    assert paired_kl_line("x", fixed, small).endswith("): higher")
    assert paired_kl_line("x", fixed, small, 0.0067).endswith("): no change shown beyond the run-to-run margin ±0.0067")
    assert paired_kl_line("x", fixed, large, 0.0067).endswith("): higher beyond the run-to-run margin ±0.0067")
    assert paired_kl_line("x", large, fixed, 0.0067).endswith("): lower beyond the run-to-run margin ±0.0067")
    with pytest.raises(ValueError, match="margin must be a non-negative"):
        paired_kl_line("x", fixed, small, -0.001)
