import math
import random

import pytest
from scipy.stats import binomtest

from calderalab.search import TailResult, min_protect, score_tail


def planted(n_layers, k_star, n_inst=20, seed=0, fail_at=()):
    """A synthetic model: with k >= k_star protected it matches the baseline exactly, below it
    loses instances progressively; ks in fail_at are forced to fail (non-monotone)."""
    rng = random.Random(seed)
    baseline = [rng.random() < 0.6 for _ in range(n_inst)]
    baseline[0] = True
    right = [i for i, x in enumerate(baseline) if x]
    calls = []

    def evaluate(k):
        calls.append(k)
        out = list(baseline)
        if k < k_star or k in fail_at:
            lost = 1 + (k_star - k) * len(right) // max(k_star, 1) if k < k_star else 1
            for i in right[: max(1, min(lost, len(right)))]:
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


def test_tolerance_allows_a_smaller_tail():
    evaluate, baseline, _ = planted(28, 10, n_inst=40)
    strict = min_protect(evaluate, 28, baseline, tolerance=0.0).k
    loose = min_protect(evaluate, 28, baseline, tolerance=0.3).k
    assert loose < strict == 10


def test_non_monotone_boundary_is_reported():
    evaluate, baseline, _ = planted(28, 5, fail_at=(6,))
    res = min_protect(evaluate, 28, baseline)
    assert res.k == 5 and res.monotonicity_violations == (6,)  # found by the k+1 check


def test_statistics_of_an_evaluation():
    baseline = [True, True, True, False, False, True, False]
    tail = TailResult((False, True, True, True, False, False, False))
    ev = score_tail(3, 28, tail, baseline, tolerance=0.0)
    assert (ev.n_correct, ev.n, ev.b, ev.c) == (3, 7, 2, 1)
    assert ev.mcnemar_p == pytest.approx(binomtest(1, 3, 0.5).pvalue)
    z = 1.959963984540054
    p = 3 / 7
    centre = (p + z * z / 14) / (1 + z * z / 7)
    half = z / (1 + z * z / 7) * math.sqrt(p * (1 - p) / 7 + z * z / 196)
    assert (ev.ci_low, ev.ci_high) == pytest.approx((centre - half, centre + half))
    assert not ev.within_tolerance and ev.protected == (25, 26, 27)
    with pytest.raises(ValueError, match="same instances"):
        score_tail(1, 28, TailResult((True,)), baseline, 0.0)
    with pytest.raises(ValueError, match="tolerance"):
        min_protect(lambda k: tail, 28, baseline, tolerance=1.5)
