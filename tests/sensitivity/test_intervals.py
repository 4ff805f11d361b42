"""Bootstrap intervals and the interval critical zone, on planted per-sample values."""

import json

import numpy as np
import pytest
from planted_profiles import measured_profile, sampled_profile

from calderalab.sensitivity import SensitivityProfile
from calderalab.sensitivity.intervals import metric_intervals, resample_indices
from calderalab.sensitivity.settings import BootstrapSettings

FLAT = [0.02] * 12
ZONE_KL = [0.02] * 5 + [0.06] * 3 + [0.02] * 4  # layers 5-7 three times the KL of the rest


def test_point_estimates_equal_the_profile_metrics():
    p = sampled_profile(ZONE_KL, seed=1)
    for metric, get in [("kl", lambda m: m.kl), ("fidelity", lambda m: m.fidelity), ("margin", lambda m: m.margin)]:
        mi = metric_intervals(p, metric)
        for l in p.layers:
            iv = mi.values[l]
            assert iv.point == pytest.approx(get(p.row(l).metrics), rel=1e-12, abs=1e-15)
            assert iv.low <= iv.point <= iv.high
        assert mi.noise.point == pytest.approx(get(p.noise), rel=1e-12, abs=1e-15)


def test_intervals_are_seeded_and_deterministic():
    p = sampled_profile(ZONE_KL, seed=1)
    a, b = metric_intervals(p, "kl"), metric_intervals(p, "kl")
    c = metric_intervals(p, "kl", BootstrapSettings(seed=7))
    assert a.values == b.values and a.values != c.values
    assert np.array_equal(resample_indices([3, 4, 5], BootstrapSettings(n_boot=100)),
                          resample_indices([3, 4, 5], BootstrapSettings(n_boot=100)))


def test_interval_width_shrinks_like_one_over_root_n():
    small, big = sampled_profile(FLAT, n=25, seed=2), sampled_profile(FLAT, n=400, seed=2)
    w = lambda p: np.mean([iv.high - iv.low for iv in metric_intervals(p, "kl").values.values()])
    assert w(small) / w(big) == pytest.approx(4.0, rel=0.25)  # sqrt(400 / 25)


SEEDS = range(10)  # both rules control the family-wise error at 5%: ~0.5 false calls expected in 10 seeds


def test_a_zone_planted_in_kl_is_found_and_its_edges_marked():
    false_steps = 0
    for seed in SEEDS:
        mi = metric_intervals(sampled_profile(ZONE_KL, seed=seed), "kl")
        assert mi.zone == (5, 6, 7)
        assert {5, 8} <= set(mi.step_layers)  # the zone's edges: a rise into layer 5, a fall into layer 8
        false_steps += not set(mi.step_layers) <= {5, 8}
    assert false_steps <= 2


@pytest.mark.parametrize("metric", ["kl", "fidelity", "margin"])
def test_pure_noise_gives_no_zone(metric):
    runs = [metric_intervals(sampled_profile(FLAT, seed=seed), metric) for seed in SEEDS]
    assert sum(mi.zone != () for mi in runs) <= 1 and sum(mi.step_layers != () for mi in runs) <= 2


def test_noise_floor_alone_does_not_make_a_zone():
    # every layer far above the numerical noise floor, none above the typical layer: no zone
    mi = metric_intervals(sampled_profile(FLAT, seed=0, noise_kl=1e-6), "kl")
    assert len(mi.above_noise) == 12 and mi.elevated == ()


def test_the_zone_is_the_run_with_most_excess():
    kl = [0.02] * 2 + [0.05] * 2 + [0.02] * 4 + [0.08] * 3 + [0.02]
    assert metric_intervals(sampled_profile(kl, n=80, seed=0), "kl").zone == (8, 9, 10)


def test_profiles_keep_their_samples_and_old_profiles_still_load(tmp_path):
    p = sampled_profile(ZONE_KL, seed=1)
    again = SensitivityProfile.load(p.save(tmp_path / "p.json"))
    assert again == p and again.has_samples
    old = json.loads((tmp_path / "p.json").read_text())
    old["format"] = 1
    for row in old["rows"]:
        del row["metrics"]["per_sample"]
    del old["noise"]["per_sample"]
    legacy = SensitivityProfile.from_dict(old)
    assert not legacy.has_samples and legacy.fidelity() == p.fidelity()
    with pytest.raises(ValueError, match="no per-sample values"):
        metric_intervals(legacy, "kl")
    with pytest.raises(ValueError, match="no per-sample values"):
        metric_intervals(measured_profile([30] * 8), "kl")
