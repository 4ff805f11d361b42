"""KL, top-1 agreement and the window bootstrap against hand computations and planted truths."""

import math

import pytest
import torch
import torch.nn.functional as F

from calderalab.eval.divergence import bootstrap_draws, token_kl, top1_agreement, window_mean_interval


def random_logp(*shape, seed=0):
    return F.log_softmax(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3, -1)


def test_kl_of_identical_distributions_is_exactly_zero():
    logp = random_logp(5, 7, 11)
    assert torch.equal(token_kl(logp, logp.clone()), torch.zeros(5, 7, dtype=torch.float64))


def test_kl_matches_hand_computation_on_three_tokens_and_has_the_right_direction():
    p, q = [0.5, 0.3, 0.2], [0.2, 0.5, 0.3]
    logp, logq = torch.tensor(p, dtype=torch.float64).log(), torch.tensor(q, dtype=torch.float64).log()
    by_hand = 0.5 * math.log(0.5 / 0.2) + 0.3 * math.log(0.3 / 0.5) + 0.2 * math.log(0.2 / 0.3)
    reverse = 0.2 * math.log(0.2 / 0.5) + 0.5 * math.log(0.5 / 0.3) + 0.3 * math.log(0.3 / 0.2)
    assert token_kl(logp, logq).item() == pytest.approx(by_hand, rel=1e-14)
    assert token_kl(logq, logp).item() == pytest.approx(reverse, rel=1e-14)
    assert abs(by_hand - reverse) > 1e-3  # the two directions differ, so the test pins the direction


def test_zero_probability_tokens_contribute_nothing():
    logp = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).log()  # (0, -inf, -inf)
    logq = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64).log()
    assert token_kl(logp, logq).item() == pytest.approx(math.log(2), rel=1e-14)
    assert token_kl(logp, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).log()).item() == 0.0


def test_kl_is_nonnegative_and_agrees_with_torch_kl_div():
    for seed in range(4):
        logp, logq = random_logp(64, 50, seed=seed), random_logp(64, 50, seed=seed + 100)
        kl = token_kl(logp, logq)
        assert (kl >= 0).all() and (kl > 0).all()
        torch.testing.assert_close(kl, F.kl_div(logq, logp, reduction="none", log_target=True).sum(-1), rtol=1e-12, atol=1e-14)


def test_top1_agreement_is_one_for_identical_and_marks_planted_disagreements():
    logp = random_logp(10, 6)
    assert top1_agreement(logp, logp.clone()).all()
    logq = logp.clone()
    for row in (2, 7):  # move the mass to a token that is not P's argmax
        other = (logp[row].argmax() + 1) % 6
        logq[row] = torch.full((6,), -20.0, dtype=torch.float64).index_fill(0, other, 0.0)
    agree = top1_agreement(logp, logq)
    assert agree.tolist() == [row not in (2, 7) for row in range(10)]


def test_shapes_must_match():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(2, 4\)"):
        token_kl(torch.zeros(2, 3), torch.zeros(2, 4))


def test_window_mean_is_the_per_token_mean_and_constant_windows_have_no_spread():
    sums, tokens = [2.0, 6.0, 1.0], [4, 6, 10]
    mean, lo, hi = window_mean_interval(sums, tokens)
    assert mean == pytest.approx(9.0 / 20.0)
    assert lo <= mean <= hi and lo < hi
    c = 0.25  # every window has the same per-token value: every resample has it too
    assert window_mean_interval([c * n for n in tokens], tokens) == pytest.approx((c, c, c))


def test_window_mean_interval_is_the_quantile_of_resampled_means():
    sums, tokens = [3.0, 0.5, 2.0, 7.0, 1.0], [10, 5, 8, 12, 6]
    draws = bootstrap_draws(5, 500, seed=3)
    by_hand = sorted(sum(sums[i] for i in d) / sum(tokens[i] for i in d) for d in draws.tolist())
    _, lo, hi = window_mean_interval(sums, tokens, level=0.9, n_boot=500, seed=3)
    assert by_hand[24] <= lo <= by_hand[25] and by_hand[474] <= hi <= by_hand[475]  # 5% / 95% quantiles


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="one sum per window"):
        window_mean_interval([1.0], [1, 2])
    with pytest.raises(ValueError, match="level"):
        window_mean_interval([1.0], [1], level=1.5)
