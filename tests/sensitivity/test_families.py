"""Per-family layer maps on planted per-sample values: a planted difference is found, equal families are not split."""

import pytest
from planted_profiles import sampled_profile

from calderalab.sensitivity.families import family_profiles, family_statement, sample_groups

FAMS = ["arith"] * 30 + ["logic"] * 30 + ["time"] * 30
EARLY = [0.06] * 3 + [0.02] * 7   # damage on layers 0-2
LATE = [0.02] * 7 + [0.06] * 3    # damage on layers 7-9


def test_groups_come_from_the_recorded_sample_families():
    p = sampled_profile(EARLY, n=len(FAMS), families=FAMS)
    groups = sample_groups(p)
    assert list(groups) == ["arith", "logic", "time"] and groups["logic"] == tuple(range(30, 60))
    with pytest.raises(ValueError, match="records no sample_categories"):
        sample_groups(p, "category")


def test_a_family_with_damage_elsewhere_is_found():
    p = sampled_profile({"arith": EARLY, "logic": EARLY, "time": LATE}, n=len(FAMS), families=FAMS, seed=3)
    fp = family_profiles(p, "kl", sample_groups(p))
    assert fp.intervals["arith"].zone == (0, 1, 2) and fp.intervals["time"].zone == (7, 8, 9)
    assert set(fp.differing["time"]) & {0, 1, 2, 7, 8, 9} and set(fp.differing["time"]) <= {0, 1, 2, 7, 8, 9}
    assert "differ beyond the noise" in family_statement(fp) and "time at layers" in family_statement(fp)


def test_families_that_are_only_harder_are_not_different():
    # same shape, logic has twice the KL everywhere: same layers, no difference in shape
    # (a 95% simultaneous band: ~0.5 false calls expected in 10 planted profiles)
    twice = [2 * x for x in LATE]
    calls = []
    for seed in range(10):
        p = sampled_profile({"arith": LATE, "logic": twice, "time": LATE}, n=len(FAMS), families=FAMS, seed=seed)
        calls.append(family_profiles(p, "kl", sample_groups(p)))
    assert sum(bool(fp.differing) for fp in calls) <= 2
    assert "no group's layer profile differs" in family_statement(next(fp for fp in calls if not fp.differing))


def test_fidelity_shapes_and_bad_requests():
    p = sampled_profile(EARLY, n=len(FAMS), families=FAMS)
    fp = family_profiles(p, "fidelity", sample_groups(p))
    for g, diff in fp.shape_diff.items():  # both shares sum to 1 over layers, so their differences sum to 0
        assert sum(iv.point for iv in diff.values()) == pytest.approx(0.0, abs=1e-12)
        assert all(iv.low <= iv.point <= iv.high for iv in diff.values())
    with pytest.raises(ValueError, match="non-negative damage"):
        family_profiles(p, "margin", sample_groups(p))
    small = family_profiles(p, "kl", {"arith": tuple(range(30)), "logic": (30, 31, 32, 33)})
    assert small.shape_diff == {} and small.differing == {} and set(small.intervals) == {"arith", "logic"}
    assert "no test of whether the groups differ" in family_statement(small)
    fp = family_profiles(p, "kl", {"arith": tuple(range(30)), "logic": tuple(range(30, 60)), "time": (60, 61)})
    assert list(fp.shape_diff) == ["arith", "logic"] and fp.dropped == ("time",) and "not tested: time" in family_statement(fp)
