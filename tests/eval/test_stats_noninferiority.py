"""Paired difference interval (Newcombe 1998 method 10), the non-inferiority verdict, and the
paired non-inferiority sample size (Nam 1997): published examples, exact properties, simulation."""

import math

import numpy as np
import pytest
from scipy.stats import norm

from calderalab.eval import noninferiority as stats


@pytest.mark.parametrize(
    "table, expected",
    [
        # Newcombe 1998 (Stat Med 17:2635), Table II example: 36, 12, 2, 0 -> 0.0569 to 0.3404
        ((36, 12, 2, 0), (0.2000, 0.0569, 0.3404)),
        # Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables (2017), ch. 8,
        # Cavo et al. (2012) table [[59, 6], [16, 80]]: -0.0621 (-0.1186 to -0.0046)
        ((59, 6, 16, 80), (-0.0621, -0.1186, -0.0046)),
    ],
)
def test_newcombe_paired_interval_matches_published_examples(table, expected):
    iv = stats.newcombe_paired_interval(*table)
    assert (iv.estimate, iv.low, iv.high) == pytest.approx(expected, abs=5e-5)


def _reference_method10(both, a_only, b_only, neither, z):
    """Method 10 written out from the paper's formulas, without the library's helpers."""
    n = both + a_only + b_only + neither
    def wilson(k):
        p = k / n
        c = (2 * k + z * z) / (2 * (n + z * z))
        h = z * math.sqrt(n) / (n + z * z) * math.sqrt(p * (1 - p) + z * z / (4 * n))
        return p, c - h, c + h
    (p1, l1, u1), (p2, l2, u2) = wilson(both + a_only), wilson(both + b_only)
    e, f, g, h = both + a_only, b_only + neither, both + b_only, a_only + neither
    ad_bc = both * neither - a_only * b_only
    if min(e, f, g, h) == 0:
        phi = 0.0
    elif ad_bc > n / 2:
        phi = (ad_bc - n / 2) / math.sqrt(e * f * g * h)
    elif ad_bc >= 0:
        phi = 0.0
    else:
        phi = ad_bc / math.sqrt(e * f * g * h)
    low = p1 - p2 - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    high = p1 - p2 + math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    return low, high


def test_interval_from_outcomes_equals_table_and_reference():
    rng = np.random.default_rng(3)
    for _ in range(50):
        a, b = rng.random(30) < 0.6, rng.random(30) < 0.5
        table = stats.paired_counts(a, b)
        assert sum(table) == 30 and table[1] - table[2] == int(a.sum()) - int(b.sum())
        iv = stats.paired_diff_interval(a, b, level=0.9)
        assert iv.estimate == pytest.approx(a.mean() - b.mean())
        assert (iv.low, iv.high) == pytest.approx(_reference_method10(*table, norm.ppf(0.95)))


def test_swapping_arguments_negates_the_interval():
    rng = np.random.default_rng(0)
    for n in (5, 17, 60):
        a, b = rng.random(n) < 0.7, rng.random(n) < 0.4
        ab, ba = stats.paired_diff_interval(a, b), stats.paired_diff_interval(b, a)
        assert (ba.estimate, ba.low, ba.high) == pytest.approx((-ab.estimate, -ab.high, -ab.low))


def test_identical_samples_contain_zero_and_shrink_with_n():
    widths = []
    for n in (10, 40, 160, 640):
        x = [i % 5 < 3 for i in range(n)]  # 60% right, both configurations identical
        iv = stats.paired_diff_interval(x, x)
        assert iv.estimate == 0 and iv.low < 0 < iv.high
        assert iv.high == pytest.approx(-iv.low, abs=0.02)
        widths.append(iv.high - iv.low)
    assert widths == sorted(widths, reverse=True) and widths[-1] < widths[0] / 4


def test_interval_covers_the_true_difference():
    """Seeded simulation: the 95% interval covers the true p10 − p01 in about 95% of draws."""
    rng = np.random.default_rng(1)
    probs = [0.45, 0.15, 0.08, 0.32]  # both, a only, b only, neither
    draws = rng.multinomial(80, probs, size=1000)
    covered = [(iv.low <= 0.07 <= iv.high) for iv in (stats.newcombe_paired_interval(*map(int, t)) for t in draws)]
    assert 0.93 <= np.mean(covered) <= 0.98


def test_noninferior_uses_the_one_sided_upper_bound():
    base = [True] * 70 + [False] * 30
    tail = [False] * 3 + [True] * 67 + [False] * 30  # 3 lost, a 3-point drop: below a 5-point margin
    res = stats.noninferior(base, tail, margin=0.05)
    assert res.estimate == pytest.approx(0.03) and res.n == 100 and res.discordant == 3
    assert res.upper == pytest.approx(stats.paired_diff_interval(base, tail, level=0.90).high)
    assert res.upper > 0.05 and not res.noninferior  # the point estimate alone would have passed
    assert stats.noninferior(base, tail, margin=0.15).noninferior
    assert not stats.noninferior(base[::5], base[::5], margin=0.05).noninferior  # identical, but 20 pairs are too few
    assert stats.noninferior(base * 20, base * 20, margin=0.05).noninferior  # identical on 2000 pairs
    with pytest.raises(ValueError, match="margin"):
        stats.noninferior(base, tail, margin=0.0)
    with pytest.raises(ValueError, match="one-sided"):
        stats.noninferior(base, tail, margin=0.05, level=0.4)


def test_sample_size_closed_forms():
    z = norm.ppf(0.95)
    # no discordance: sigma1 = 0 and sigma0^2 = margin(1 - margin)
    assert stats.noninferiority_sample_size(0.0, 0.05) == math.ceil(z * z * 0.95 / 0.05) == 52
    # with much discordance the restricted variance is close to the unrestricted one: Connor's Wald form
    wald = (z + norm.ppf(0.8)) ** 2 * 0.4 / 0.05**2
    assert stats.noninferiority_sample_size(0.4, 0.05) == pytest.approx(wald, rel=0.01)
    assert stats.noninferiority_sample_size(0.2, 0.05) > stats.noninferiority_sample_size(0.1, 0.05)
    assert stats.noninferiority_sample_size(0.1, 0.10) < stats.noninferiority_sample_size(0.1, 0.05)
    with pytest.raises(ValueError, match="cannot be shown"):
        stats.noninferiority_sample_size(0.2, 0.05, difference=0.05)
    with pytest.raises(ValueError, match="discordance"):
        stats.noninferiority_sample_size(0.02, 0.05, difference=0.03)


def _power(n, discordance, margin=0.05, reps=1000, seed=0):
    rng = np.random.default_rng(seed)
    probs = [0.5, discordance / 2, discordance / 2, 0.5 - discordance]
    tables = rng.multinomial(n, probs, size=reps)
    return float(np.mean([stats.newcombe_paired_interval(*map(int, t), level=0.90).high < margin for t in tables]))


@pytest.mark.parametrize("discordance", [0.1, 0.2])
def test_sample_size_gives_the_stated_power_in_simulation(discordance):
    """At Nam's n the test actually used (Newcombe's one-sided 95% bound < margin) has ~80% power
    when there is no true drop, and clearly less at half that n."""
    n = stats.noninferiority_sample_size(discordance, 0.05)
    assert 0.75 <= _power(n, discordance) <= 0.87
    assert _power(n // 2, discordance) < 0.65


def test_all_right_on_both_passes_exactly_from_the_sample_size_of_zero_discordance():
    """Both always right: the bound is 1 − Wilson low of n/n = z²/(n + z²), below the margin iff
    n > z²(1 − margin)/margin, the same 52 pairs that the ψ = 0 sample size gives."""
    needed = stats.noninferiority_sample_size(0.0, 0.05)
    assert not stats.noninferior([True] * (needed - 1), [True] * (needed - 1), 0.05).noninferior
    assert stats.noninferior([True] * needed, [True] * needed, 0.05).noninferior
