import itertools
import random

import pytest

from calderalab.allocation import (
    Option,
    UltraRule,
    budget_allocation,
    equal_budget_alternatives,
    predicted_losses,
    ultra_ranks,
)
from calderalab.sensitivity import SensitivityProfile, critical_zone

REPORT_FID = {23: 0.130, 24: 0.044, 25: 0.026, 26: 0.016, 27: 0.006}
REPORT_MARGIN = {23: -0.027, 24: -0.032, 25: -0.036, 26: -0.040, 27: -0.054}


def report_profile():
    fid = {l: 0.82 for l in range(6)} | {l: 0.37 for l in range(6, 19)} | {l: 0.19 for l in range(19, 23)} | REPORT_FID
    return SensitivityProfile.from_values(28, fid, {l: REPORT_MARGIN.get(l, 0.0) for l in fid})


def test_ultra_rule_reproduces_report_ranks():
    p = report_profile()
    zone = critical_zone(p, 0.15)
    assert ultra_ranks(p, 32, zone) == {23: 256, 24: 256, 25: 128, 26: 80, 27: 64}


def test_ultra_rule_properties():
    p = report_profile()
    zone = critical_zone(p, 0.15)
    rec = ultra_ranks(p, 32, zone)
    sev = ultra_ranks(p, 32, zone, UltraRule(policy="severity", saturation=1.0, exponent=8))
    # monotone in fidelity, opposite directions for the two policies
    by_fid = sorted(zone, key=lambda l: REPORT_FID[l])
    assert [rec[l] for l in by_fid] == sorted(rec[l] for l in by_fid)
    assert [sev[l] for l in by_fid] == sorted((sev[l] for l in by_fid), reverse=True)
    for ranks in (rec, sev):
        assert all(r % 16 == 0 and 64 <= r <= 256 for r in ranks.values())
    assert max(ultra_ranks(p, 32, zone, max_rank=100).values()) == 100
    with pytest.raises(ValueError, match="min_multiplier"):
        UltraRule(min_multiplier=9.0)
    with pytest.raises(ValueError, match="at least one layer"):
        ultra_ranks(p, 32, ())


def _brute(options, budget):
    best = None
    for choice in itertools.product(*[range(len(o)) for o in options]):
        bits = sum(options[l][c].bits for l, c in enumerate(choice))
        loss = sum(options[l][c].loss for l, c in enumerate(choice))
        if bits <= budget and (best is None or loss < best - 1e-12):
            best = loss
    return best


@pytest.mark.parametrize("seed", range(12))
def test_budget_allocation_matches_brute_force(seed):
    rng = random.Random(seed)
    n_layers, n_opts = rng.randint(2, 5), rng.randint(2, 4)
    options = [[Option(f"o{j}", rng.randint(1, 40), rng.random() * 10) for j in range(n_opts)] for _ in range(n_layers)]
    cheapest = sum(min(o.bits for o in opts) for opts in options)
    budget = cheapest + rng.randint(0, 60)
    alloc = budget_allocation(options, budget)
    assert alloc.total_bits <= budget
    assert alloc.total_loss == pytest.approx(_brute(options, budget), abs=1e-9)


def test_budget_allocation_rejects_impossible_budget():
    with pytest.raises(ValueError, match="cheapest"):
        budget_allocation([[Option("a", 10, 1.0)]], 5)


def test_predicted_losses_scale_quadratically():
    out = predicted_losses({0: 0.2}, {0: 0.1}, {0: [0.1, 0.05, 0.0, 0.2]})
    assert out[0] == pytest.approx([0.2, 0.05, 0.0, 0.8])


def test_equal_budget_alternatives():
    # 6 identical layers: compressed 3 bits, 4 bits, or protected 16 bits
    options = [[Option("3b", 3, 1.0), Option("4b", 4, 0.5), Option("none", 16, 0.0)] for _ in range(6)]
    budget = 6 * 3 + 2 * 13  # room for exactly two protected layers
    alt = equal_budget_alternatives(options, budget, base="3b", seed=1)
    assert alt["first-k"].names == ("none", "none", "3b", "3b", "3b", "3b")
    assert alt["last-k"].names == ("3b", "3b", "3b", "3b", "none", "none")
    assert alt["random-k"].names.count("none") == 2
    assert alt["uniform"].names == ("4b",) * 6  # 24 bits; uniform "none" (96) does not fit
    assert all(a.total_bits <= budget for a in alt.values())
    again = equal_budget_alternatives(options, budget, base="3b", seed=1)
    assert again["random-k"] == alt["random-k"]
