import math
import random

import pytest
from scipy.stats import binomtest

from calderalab.eval.noninferiority import newcombe_paired_interval, noninferior, noninferiority_sample_size
from calderalab.search import MarginTest, TailResult, min_protect, score_tail


def planted(n_layers, k_star, n_inst=200, seed=0, fail_at=(), lost_per_layer=None):
    """A synthetic model: with k >= k_star protected it matches the baseline exactly; below it
    loses half its right answers (or `lost_per_layer` more for each missing layer); ks in
    fail_at lose half too (non-monotone)."""
    rng = random.Random(seed)
    baseline = [rng.random() < 0.6 for _ in range(n_inst)]
    baseline[0] = True
    right = [i for i, x in enumerate(baseline) if x]
    calls = []

    def evaluate(k):
        calls.append(k)
        out = list(baseline)
        if k < k_star or k in fail_at:
            lost = len(right) // 2 if lost_per_layer is None or k >= k_star else (k_star - k) * lost_per_layer
            for i in right[: min(lost, len(right))]:
                out[i] = False
        return TailResult(tuple(out))

    return evaluate, baseline, calls


@pytest.mark.parametrize("n_layers,k_star", [(28, 5), (80, 10), (30, 0), (30, 30), (30, 1), (30, 29), (1, 1)])
def test_finds_planted_minimum_in_log_evaluations(n_layers, k_star):
    evaluate, baseline, calls = planted(n_layers, k_star)
    res = min_protect(evaluate, n_layers, baseline)
    assert res.k == k_star
    assert res.protected == tuple(range(n_layers - k_star, n_layers))
    assert res.boundary_verified and res.monotonicity_violations == ()
    assert len(calls) == len(set(calls)) == len(res.evaluations)
    assert len(calls) <= 3 + math.ceil(math.log2(n_layers + 1))
    if k_star > 0:
        assert k_star - 1 in calls and k_star in calls
    # the passing tail equals the baseline: no discordance, so the margin needs the ψ = 0 sample size
    assert res.discordance == 0 and res.needed_n == noninferiority_sample_size(0.0, 0.05) == 52
    assert res.n == 200 and res.deciding.k == k_star and res.deciding.test.upper < 0.05


def test_no_tail_passes_when_n_is_too_small_for_the_margin():
    """20 instances: even the fully protected model (identical outcomes) cannot show a drop
    below 5 points, so the answer is 'none', not 'all layers'."""
    evaluate, baseline, calls = planted(28, 5, n_inst=20)
    res = min_protect(evaluate, 28, baseline)
    assert res.k is None and res.protected == () and not res.boundary_verified
    assert 28 in calls and res.monotonicity_violations == ()
    assert not any(e.passes for e in res.evaluations)
    full = next(e for e in res.evaluations if e.k == 28)
    assert (full.b, full.c) == (0, 0) and res.deciding is full  # closest to passing
    assert res.needed_n == 52 > res.n == 20
    wider = min_protect(evaluate, 28, baseline, MarginTest(margin=0.25))
    assert wider.k == 5  # the same data pass a margin they can support


def test_a_wider_margin_allows_a_smaller_tail():
    """Each missing layer loses 4 of ~120 right answers (2 points of 200): the margin decides."""
    evaluate, baseline, _ = planted(28, 10, n_inst=200, lost_per_layer=4)
    strict = min_protect(evaluate, 28, baseline, MarginTest(margin=0.05))
    loose = min_protect(evaluate, 28, baseline, MarginTest(margin=0.15))
    assert loose.k < strict.k <= 10
    for res in (strict, loose):
        by_k = {e.k: e for e in res.evaluations}
        assert by_k[res.k].test.upper < res.test.margin <= by_k[res.k - 1].test.upper
        assert res.boundary_verified


def test_the_upper_bound_decides_not_the_point_estimate():
    """A tail 3 points below the baseline on 100 instances: the point estimate is inside a
    5-point margin, but the one-sided 95% upper bound is not, so it fails."""
    baseline = [True] * 70 + [False] * 30
    tail = TailResult(tuple([False] * 3 + [True] * 67 + [False] * 30))
    ev = score_tail(1, 28, tail, baseline)
    assert ev.test.estimate == pytest.approx(0.03)
    assert ev.test.upper > 0.05 and not ev.passes


def test_non_monotone_boundary_is_reported():
    evaluate, baseline, _ = planted(28, 5, fail_at=(6,))
    res = min_protect(evaluate, 28, baseline)
    assert res.k == 5 and res.monotonicity_violations == (6,)  # found by the k+1 check


def test_statistics_of_an_evaluation():
    baseline = [True, True, True, False, False, True, False]
    tail = TailResult((False, True, True, True, False, False, False))
    ev = score_tail(3, 28, tail, baseline, MarginTest(margin=0.05))
    assert (ev.n_correct, ev.n, ev.b, ev.c) == (3, 7, 2, 1)
    assert ev.mcnemar_p == pytest.approx(binomtest(1, 3, 0.5).pvalue)
    z = 1.959963984540054
    p = 3 / 7
    centre = (p + z * z / 14) / (1 + z * z / 7)
    half = z / (1 + z * z / 7) * math.sqrt(p * (1 - p) / 7 + z * z / 196)
    assert (ev.ci_low, ev.ci_high) == pytest.approx((centre - half, centre + half))
    # table of (baseline, tail): both right 2, baseline only 2, tail only 1, neither 2
    assert ev.test == noninferior(baseline, list(tail.outcomes), 0.05)
    assert ev.test.estimate == pytest.approx(1 / 7)
    assert ev.test.upper == pytest.approx(newcombe_paired_interval(2, 2, 1, 2, level=0.90).high)
    assert not ev.passes and ev.protected == (25, 26, 27)
    with pytest.raises(ValueError, match="same instances"):
        score_tail(1, 28, TailResult((True,)), baseline)


@pytest.mark.parametrize("kwargs, match", [({"margin": 1.5}, "margin"), ({"margin": 0.0}, "margin"),
                                           ({"level": 0.3}, "one-sided"), ({"power": 1.0}, "power")])
def test_margin_test_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MarginTest(**kwargs)
