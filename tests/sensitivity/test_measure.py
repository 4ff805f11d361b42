import math

import pytest
import torch

from calderalab.sensitivity import ProbeSample, SensitivityConfig, SensitivityProfile
from calderalab.sensitivity.measure import (
    aggregate,
    compare_answer,
    greedy_reference_samples,
    layer_sensitivity,
    margins,
    teacher_forced_logprobs,
)


def _lp(T=5, V=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(T, V, generator=g, dtype=torch.float64), dim=-1)


def test_margins_match_bruteforce():
    lp = _lp()
    y = torch.tensor([0, 3, 6, 2, 2])
    got = margins(lp, y)
    for t in range(5):
        others = [lp[t, v] for v in range(7) if v != y[t]]
        assert got[t].item() == pytest.approx((lp[t, y[t]] - max(others)).item())


def test_compare_identical_is_perfect_and_kl_matches_definition():
    base = _lp(seed=1)
    y = base.argmax(1)
    same = compare_answer(base, base, y)
    assert same.all_top1_kept and same.top1_kept == 5 and same.kl_sum == 0.0 and same.margin_delta_sum == 0.0
    other = _lp(seed=2)
    c = compare_answer(base, other, y)
    p, q = base.exp(), other.exp()
    kl = sum((p[t] * (p[t] / q[t]).log()).sum().item() for t in range(5))
    assert c.kl_sum == pytest.approx(kl, rel=1e-9)
    kept = (base.argmax(1) == other.argmax(1))
    assert c.top1_kept == int(kept.sum()) and c.all_top1_kept == bool(kept.all())
    assert c.margin_delta_sum == pytest.approx((margins(other, y) - margins(base, y)).sum().item())


def test_aggregate_fidelity_is_per_sample_and_rest_per_token():
    base = _lp(seed=3)
    y = base.argmax(1)
    flip = base.clone()
    flip[0] = flip[0].flip(0)  # changes the top-1 of one token only
    m = aggregate([compare_answer(base, base, y), compare_answer(base, flip, y)])
    assert m.fidelity == 0.5 and m.n_samples == 2 and m.n_tokens == 10
    assert m.top1_agreement == pytest.approx(9 / 10)
    assert m.margin < 0 and m.kl > 0


def _samples(n=5, seed=0, vocab=64):
    g = torch.Generator().manual_seed(seed)
    return [ProbeSample(tuple(torch.randint(1, vocab, (3 + i,), generator=g).tolist()),
                        tuple(torch.randint(1, vocab, (2 + i % 3,), generator=g).tolist())) for i in range(n)]


def test_teacher_forced_batching_matches_single(make_tiny_llama):
    model = make_tiny_llama()
    samples = _samples()
    one = teacher_forced_logprobs(model, samples, batch_size=1)
    many = teacher_forced_logprobs(model, samples, batch_size=4)
    for a, b, s in zip(one, many, samples):
        assert a.shape == (len(s.answer_ids), 64)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # and the positions are the ones predicting the answer: compare with an unpadded full forward
    s = samples[2]
    ids = torch.tensor([s.prompt_ids + s.answer_ids])
    full = torch.log_softmax(model(input_ids=ids).logits[0], -1)
    p = len(s.prompt_ids)
    torch.testing.assert_close(one[2], full[p - 1 : p - 1 + len(s.answer_ids)])


def test_greedy_references_are_the_models_argmax(make_tiny_llama):
    model = make_tiny_llama()
    samples = greedy_reference_samples(model, [[5, 6, 7], [9, 1]], SensitivityConfig(max_new_tokens=6))
    for s in samples:
        assert len(s.answer_ids) == 6
        lp = teacher_forced_logprobs(model, [s], batch_size=1)[0]
        assert lp.argmax(1).tolist() == list(s.answer_ids)


def test_layer_sensitivity_finds_the_damaged_layer_and_restores_weights(make_tiny_llama, swap_weights, linear_of):
    model = make_tiny_llama(n_layers=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    samples = greedy_reference_samples(model, [s.prompt_ids for s in _samples(8)], SensitivityConfig(max_new_tokens=4))
    g = torch.Generator().manual_seed(1)

    def weights_for_layer(layer):
        out = {}
        for name in ("q", "k", "v", "o", "gate", "up", "down"):
            w = linear_of(model, layer, name).weight.detach()
            # layer 2 is wrecked, the others are exact copies
            out[(layer, name)] = w + 3.0 * torch.randn(w.shape, generator=g) if layer == 2 else w.clone()
        return out

    calls, layer_calls = [], {l: [] for l in range(4)}
    model.register_forward_pre_hook(lambda *a: calls.append(1))
    for l in range(4):
        model.model.layers[l].register_forward_hook(lambda *a, l=l: layer_calls[l].append(1))
    done = []
    prof = layer_sensitivity(model, samples, weights_for_layer, n_layers=4, config=SensitivityConfig(batch_size=3, noise_batch_size=1),
                             swap=swap_weights, progress=lambda d, t: done.append((d, t)))
    # full forwards: baseline once (3 batches) + noise (8 singles); per-layer runs never run the whole model
    assert len(calls) == 3 + 8
    # layer j runs in the baseline and noise passes, once per batch to advance the cached streams past it
    # (j < 3), and once per batch in the run of every layer l <= j: only layers l..L-1 run for layer l
    for j in range(4):
        assert len(layer_calls[j]) == 3 + 8 + (3 if j < 3 else 0) + 3 * (j + 1), j
    assert done[-1] == (4, 4)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    fid = prof.fidelity()
    assert fid[0] == fid[1] == fid[3] == 1.0 and prof.row(0).metrics.kl < 1e-8
    assert fid[2] < 1.0 and prof.row(2).metrics.kl > 1e-3 and prof.row(2).metrics.margin < 0
    assert prof.noise.fidelity == 1.0 and prof.noise.kl < 1e-6  # float32 round-off only
    assert prof.row(2).fidelity_loss == pytest.approx(1.0 - fid[2])
    again = SensitivityProfile.from_dict(prof.to_dict())
    assert again == prof


def test_layer_sensitivity_rejects_bad_input(make_tiny_llama, swap_weights):
    model = make_tiny_llama()
    s = _samples(2)
    with pytest.raises(ValueError, match="outside"):
        layer_sensitivity(model, s, lambda l: {}, n_layers=4, layers=[7], swap=swap_weights)
    with pytest.raises(ValueError, match="other layers"):
        layer_sensitivity(model, s, lambda l: {(l + 1, "q"): torch.zeros(32, 32)}, n_layers=4, layers=[0], swap=swap_weights)
    with pytest.raises(ValueError, match="noise_batch_size"):
        SensitivityConfig(batch_size=1, noise_batch_size=1)
    with pytest.raises(ValueError, match="non-empty"):
        ProbeSample((1,), ())
