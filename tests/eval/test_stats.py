import math

import numpy as np
import pytest
from scipy.stats import binomtest

from calderalab.eval import stats


# --------------------------------------------------------------------------- Wilson


def _wilson_closed_form(k, n, z=1.959963984540054):
    p = k / n
    c = (2 * k + z * z) / (2 * (n + z * z))
    h = z * math.sqrt(n) / (n + z * z) * math.sqrt(p * (1 - p) + z * z / (4 * n))
    return c - h, c + h


@pytest.mark.parametrize(
    "k,n,low,high",
    [
        (0, 7, 0.0, 0.35433),  # z²/(n+z²) at k=0
        (7, 7, 0.64567, 1.0),
        (3, 7, 0.15821, 0.74951),
        (6, 7, 0.48687, 0.97433),  # the "6/7 (86%) [49–97]" cell
    ],
)
def test_wilson_known_values(k, n, low, high):
    iv = stats.wilson_interval(k, n)
    assert iv.estimate == pytest.approx(k / n)
    assert iv.low == pytest.approx(low, abs=5e-5)
    assert iv.high == pytest.approx(high, abs=5e-5)


def test_wilson_matches_alternative_closed_form_and_scipy():
    for n in (1, 5, 20, 101):
        for k in range(n + 1):
            lo, hi = _wilson_closed_form(k, n)
            iv = stats.wilson_interval(k, n)
            assert iv.low == pytest.approx(max(lo, 0), abs=1e-12)
            assert iv.high == pytest.approx(min(hi, 1), abs=1e-12)
            ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
            assert iv.low == pytest.approx(ci.low, abs=1e-9) and iv.high == pytest.approx(ci.high, abs=1e-9)


def test_wilson_level_widens_interval():
    assert stats.wilson_interval(3, 7, 0.99).half_width > stats.wilson_interval(3, 7, 0.90).half_width


@pytest.mark.parametrize("k,n,level", [(8, 7, 0.95), (-1, 7, 0.95), (0, 0, 0.95), (3, 7, 1.0)])
def test_wilson_rejects_bad_input(k, n, level):
    with pytest.raises(ValueError):
        stats.wilson_interval(k, n, level)


# --------------------------------------------------------------------------- McNemar


def test_mcnemar_b0_c6():
    r = stats.mcnemar_from_counts(0, 6)
    assert r.p_value == pytest.approx(0.03125, abs=0)


def test_mcnemar_no_discordance_is_one():
    r = stats.mcnemar_exact([True, False, True], [True, False, True])
    assert (r.b, r.c, r.n_pairs, r.p_value) == (0, 0, 3, 1.0)


@pytest.mark.parametrize("b,c", [(1, 0), (2, 5), (5, 5), (3, 11), (10, 30), (0, 20)])
def test_mcnemar_matches_scipy_binomtest(b, c):
    expected = binomtest(min(b, c), b + c, 0.5, alternative="two-sided").pvalue
    assert stats.mcnemar_from_counts(b, c).p_value == pytest.approx(expected, rel=1e-12)


def test_mcnemar_exact_counts_direction():
    a = [True, True, False, False, True]
    b = [False, True, True, True, True]
    r = stats.mcnemar_exact(a, b)
    assert (r.b, r.c, r.n_pairs) == (1, 2, 5)


def test_mcnemar_rejects_unequal_lengths_and_non_binary():
    with pytest.raises(ValueError, match="equal lengths"):
        stats.mcnemar_exact([True], [True, False])
    with pytest.raises(ValueError, match="booleans"):
        stats.mcnemar_exact([0, 2], [1, 0])


def test_min_p_and_min_discordant():
    assert stats.min_mcnemar_p(6) == pytest.approx(0.03125)
    assert stats.min_mcnemar_p(5) == pytest.approx(0.0625)
    assert stats.min_discordant_for(0.05) == 6
    assert stats.min_discordant_for(0.01) == 8  # 2·0.5^8 = 0.0078


# --------------------------------------------------------------------------- bootstraps


def test_paired_bootstrap_is_seeded_and_contains_estimate():
    rng = np.random.default_rng(1)
    a = rng.random(60) < 0.4
    b = rng.random(60) < 0.6
    i1 = stats.paired_bootstrap_diff(a, b, n_boot=2000, seed=3)
    i2 = stats.paired_bootstrap_diff(a, b, n_boot=2000, seed=3)
    assert i1 == i2
    assert i1.estimate == pytest.approx(b.mean() - a.mean())
    assert i1.low <= i1.estimate <= i1.high


def test_paired_bootstrap_identical_outcomes_is_degenerate():
    a = [True, False, True, True]
    iv = stats.paired_bootstrap_diff(a, a, n_boot=500)
    assert (iv.estimate, iv.low, iv.high) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_spread_matches_analytic_se():
    # The bootstrap SD of the mean of d approaches sd(d, ddof=0)/sqrt(n).
    rng = np.random.default_rng(0)
    a = rng.random(400) < 0.5
    b = rng.random(400) < 0.5
    d = b.astype(float) - a.astype(float)
    iv = stats.paired_bootstrap_diff(a, b, n_boot=8000, seed=0)
    se = d.std() / math.sqrt(d.size)
    assert iv.half_width == pytest.approx(1.95996 * se, rel=0.07)


def test_cluster_bootstrap_wider_than_paired_for_clustered_effects():
    # Families differ strongly in effect, so resampling families must widen the interval.
    fams, a, b = [], [], []
    for f, effect in enumerate([1, 1, 1, 0, 0, 0, -1, 0]):
        for _ in range(10):
            fams.append(f"f{f}")
            a.append(effect < 0)
            b.append(effect > 0)
    plain = stats.paired_bootstrap_diff(a, b, n_boot=3000, seed=0)
    clustered = stats.cluster_bootstrap_diff(a, b, fams, n_boot=3000, seed=0)
    assert clustered.estimate == pytest.approx(plain.estimate)
    assert clustered.half_width > 1.5 * plain.half_width
    assert clustered == stats.cluster_bootstrap_diff(a, b, fams, n_boot=3000, seed=0)


def test_cluster_bootstrap_validates_labels():
    with pytest.raises(ValueError, match="labels"):
        stats.cluster_bootstrap_diff([True, False], [True, True], ["x"])


# --------------------------------------------------------------------------- mean ± std, Holm


def test_mean_std_uses_ddof1():
    ms = stats.mean_std([3 / 7, 4 / 7, 3 / 7])
    assert ms.mean == pytest.approx(10 / 21)
    assert ms.std == pytest.approx(np.std([3 / 7, 4 / 7, 3 / 7], ddof=1))
    assert ms.format() == "47.6 ± 8.2 (n=3)"
    one = stats.mean_std([0.5])
    assert math.isnan(one.std) and one.format() == "50.0 (n=1, no spread)"


def test_holm_known_vector():
    adj = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adj == pytest.approx((0.03, 0.06, 0.06, 0.02))


def test_holm_against_reference_loop():
    rng = np.random.default_rng(5)
    p = rng.random(9) ** 2
    m = p.size
    order = sorted(range(m), key=lambda i: p[i])
    ref, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        ref[i] = running
    assert stats.holm(p) == pytest.approx(tuple(ref))
    assert stats.holm([]) == ()
    with pytest.raises(ValueError):
        stats.holm([0.2, 1.5])


# --------------------------------------------------------------------------- sample size, adequacy


def test_connor_sample_size_hand_value():
    # p10=0.2, p01=0.05: psi=0.25, delta=0.15; (1.95996·0.5 + 0.84162·sqrt(0.2275))² / 0.0225 = 84.3 → 85
    assert stats.mcnemar_sample_size(0.2, 0.05) == 85
    assert stats.mcnemar_sample_size(0.2, 0.05, power=0.9) > 85
    with pytest.raises(ValueError, match="no difference"):
        stats.mcnemar_sample_size(0.1, 0.1)


def test_n_for_half_width():
    n = stats.n_for_half_width(0.15)
    assert stats.wilson_interval(n // 2, n).half_width <= 0.15
    assert stats.wilson_interval((n - 1) // 2, n - 1).half_width > 0.15


def test_adequacy_messages():
    msg = stats.adequacy(7, k=3, discordant=2)
    assert msg is not None
    assert "N=7 is too small" in msg and "±30 points" in msg
    assert "smallest possible McNemar p is 0.5" in msg and "≥ 6 discordant" in msg
    assert stats.adequacy(400, discordant=30) is None
    assert "discordant" not in stats.adequacy(7)


def test_connor_sample_size_gives_about_the_asked_power_under_the_exact_test():
    # Exact power of the exact McNemar test at the Connor n: D ~ Binom(n, psi), b | D ~ Binom(D, p10/psi).
    from scipy.stats import binom

    p10, p01 = 0.2, 0.05
    n = stats.mcnemar_sample_size(p10, p01, power=0.8)
    psi = p10 + p01
    power = 0.0
    for d in range(n + 1):
        pd = binom.pmf(d, n, psi)
        if pd < 1e-12:
            continue
        power += pd * sum(binom.pmf(b, d, p10 / psi) for b in range(d + 1)
                          if stats.mcnemar_from_counts(b, d - b).p_value < 0.05)
    assert 0.75 < power < 0.9
    # and clearly underpowered at half that n
    assert stats.mcnemar_sample_size(p10, p01, power=0.5) < n


def test_cluster_bootstrap_matches_naive_two_stage_resampling():
    rng = np.random.default_rng(7)
    fams = [f"f{i % 5}" for i in range(40)]
    a = rng.random(40) < 0.5
    b = rng.random(40) < np.where(np.arange(40) % 5 < 2, 0.9, 0.4)
    d = b.astype(float) - a.astype(float)
    groups = [d[[f == name for f in fams]] for name in sorted(set(fams))]
    draws = []
    for _ in range(4000):  # the textbook loop: families with replacement, then instances within
        picked = rng.integers(0, len(groups), len(groups))
        vals = np.concatenate([groups[g][rng.integers(0, groups[g].size, groups[g].size)] for g in picked])
        draws.append(vals.mean())
    lo, hi = np.quantile(draws, [0.025, 0.975])
    iv = stats.cluster_bootstrap_diff(a, b, fams, n_boot=20000, seed=0)
    assert iv.low == pytest.approx(lo, abs=0.03) and iv.high == pytest.approx(hi, abs=0.03)


@pytest.mark.parametrize("k,n,p", [(0, 10, 0.25), (3, 10, 0.25), (7, 23, 0.25), (23, 101, 0.25), (60, 345, 0.2),
                                   (5, 5, 0.5), (1, 1, 0.9), (400, 1000, 0.38)])
def test_binomial_test_greater_matches_scipy(k, n, p):
    from calderalab.eval.stats import binomial_test_greater

    assert binomial_test_greater(k, n, p) == pytest.approx(binomtest(k, n, p, alternative="greater").pvalue, rel=1e-9)


def test_poisson_binomial_equals_binomial_and_brute_force():
    import itertools

    from calderalab.eval.stats import binomial_test_greater, poisson_binomial_greater

    for k in range(0, 13):
        assert poisson_binomial_greater(k, [0.25] * 12) == pytest.approx(binomial_test_greater(k, 12, 0.25) if k else 1.0)
    ps = [0.25, 0.2, 1 / 3, 0.5, 0.25, 0.2]
    for k in range(len(ps) + 1):
        brute = sum(
            math.prod(p if x else 1 - p for p, x in zip(ps, xs))
            for xs in itertools.product((0, 1), repeat=len(ps)) if sum(xs) >= k
        )
        assert poisson_binomial_greater(k, ps) == pytest.approx(brute, abs=1e-12)


def test_binomial_tests_refuse_bad_input():
    from calderalab.eval.stats import binomial_test_greater, poisson_binomial_greater

    with pytest.raises(ValueError, match="0 <= k <= n"):
        binomial_test_greater(5, 4, 0.5)
    with pytest.raises(ValueError, match="probabilit"):
        poisson_binomial_greater(1, [0.5, 1.5])
