"""The fast path (cached uncompressed streams, layers l..L-1 only, head at answer positions)
against the full-forward reference path on tiny real transformers models."""

import pytest
import torch

from calderalab.models import swapped_weights, target_linear, tiny_model
from calderalab.sensitivity.fastpath import FastPathUnsupported, SuffixRunner, decoder_parts
from calderalab.sensitivity.measure import (
    ProbeSample,
    SensitivityConfig,
    greedy_reference_samples,
    layer_sensitivity,
    teacher_forced_logprobs,
)

MODULES = ("q", "k", "v", "o", "gate", "up", "down")
TOL = dict(atol=1e-5, rtol=1e-5)


def _prompts(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, 260, (3 + 2 * i,), generator=g).tolist() for i in range(n)]


def _noisy(model, layer, scale, seed):
    g = torch.Generator().manual_seed(seed)
    return {(layer, n): (w := target_linear(model, layer, n).weight.detach()) + scale * w.std() * torch.randn(w.shape, generator=g)
            for n in MODULES}


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_suffix_runs_equal_full_forward_with_swapped_layer(family):
    model, _ = tiny_model(family, n_layers=4, seed=0)
    samples = greedy_reference_samples(model, _prompts(), SensitivityConfig(max_new_tokens=6), eos_token_id=2)
    runner = SuffixRunner(model, samples, batch_size=3)
    for a, b in zip(runner.base, teacher_forced_logprobs(model, samples, 3), strict=True):
        torch.testing.assert_close(a, b, **TOL)
    for layer in range(4):
        runner.advance(layer)
        with swapped_weights(model, _noisy(model, layer, 0.5, layer)):
            fast = runner.run_from(layer)
            full = teacher_forced_logprobs(model, samples, 3)
        for a, b, s in zip(fast, full, samples, strict=True):
            assert a.shape == (len(s.answer_ids), 260)
            torch.testing.assert_close(a, b, **TOL)
        # the swap really changed the outputs: the test can fail
        assert max((a - b).abs().max() for a, b in zip(fast, runner.base)) > 1e-2


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_profile_fast_equals_full_path(family):
    model, _ = tiny_model(family, n_layers=4, seed=1)
    samples = greedy_reference_samples(model, _prompts(8, seed=3), SensitivityConfig(max_new_tokens=5), eos_token_id=2)
    weights = {l: _noisy(model, l, 0.3, 10 + l) for l in range(4)}
    run = lambda fast: layer_sensitivity(model, samples, weights.__getitem__, 4,  # noqa: E731
                                         config=SensitivityConfig(batch_size=3, fast_path=fast), swap=swapped_weights)
    fast, full = run(True), run(False)
    assert fast.settings["fast_path"] and not full.settings["fast_path"]
    # the noise floor is the full forward in both, against a baseline that differs by lm_head shape only
    assert fast.noise.fidelity == full.noise.fidelity == 1.0 and fast.noise.margin == pytest.approx(full.noise.margin, abs=1e-6)
    for a, b in zip(fast.rows, full.rows, strict=True):
        assert a.metrics.fidelity == b.metrics.fidelity and a.metrics.top1_agreement == b.metrics.top1_agreement
        assert a.metrics.margin == pytest.approx(b.metrics.margin, abs=1e-5)
        assert a.metrics.kl == pytest.approx(b.metrics.kl, rel=1e-3, abs=1e-6)
    assert min(r.metrics.kl for r in fast.rows) > 1e-4  # non-trivial damage was measured


def test_layers_must_be_visited_in_order():
    model, _ = tiny_model("llama", n_layers=4, seed=0)
    runner = SuffixRunner(model, [ProbeSample((5, 6, 7), (8, 9))], batch_size=2)
    runner.advance(2)
    with pytest.raises(ValueError, match="ascending"):
        runner.advance(1)
    with pytest.raises(ValueError, match="advance"):
        runner.run_from(3)


def test_unknown_structure_is_reported():
    with pytest.raises(FastPathUnsupported, match="decoder"):
        decoder_parts(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma"])
def test_batched_greedy_answers_equal_one_at_a_time(family):
    model, _ = tiny_model(family, n_layers=2, seed=0)
    prompts = _prompts(7)
    one = greedy_reference_samples(model, prompts, SensitivityConfig(max_new_tokens=8, generate_batch_size=1), eos_token_id=2)
    many = greedy_reference_samples(model, prompts, SensitivityConfig(max_new_tokens=8, generate_batch_size=3), eos_token_id=2)
    assert many == one
    assert all(1 <= len(s.answer_ids) <= 8 for s in many)


def test_batched_greedy_stops_after_eos():
    model, _ = tiny_model("llama", n_layers=2, seed=0)
    prompts = _prompts(4)
    free = greedy_reference_samples(model, prompts, SensitivityConfig(max_new_tokens=6, generate_batch_size=4))
    eos = free[1].answer_ids[2]  # pretend the third token of one answer is eos
    cut = greedy_reference_samples(model, prompts, SensitivityConfig(max_new_tokens=6, generate_batch_size=4), eos_token_id=eos)
    assert cut[1].answer_ids == free[1].answer_ids[: free[1].answer_ids.index(eos) + 1]
    for f, c in zip(free, cut):
        assert c.answer_ids == f.answer_ids[: len(c.answer_ids)]
        assert eos not in c.answer_ids[:-1]
