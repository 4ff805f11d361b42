"""The study report's zone wording from planted profiles (no model): a flat profile has no zone
and its depth-protected set is shown as a control; a late dip is named with its numbers."""

from __future__ import annotations

from planted_profiles import FLAT, LATE_DIP, measured_profile


def _report(profile, ranks=None):
    from calderalab.experiments import StudyConfig
    from calderalab.experiments.study import _sections, choose_zone

    config = StudyConfig()
    zone, source = choose_zone(profile, config.sensitivity.threshold)
    sections = _sections(profile, zone, source, 32, ranks or {}, {}, config)
    return zone, source, {s.title: s.body for s in sections}, [s.title for s in sections]


def test_flat_profile_headline_says_no_zone_and_shows_a_control():
    zone, source, body, titles = _report(measured_profile(FLAT))  # the study runs no ultra plan on a control
    assert source == "depth fallback" and zone == (23, 24, 25, 26, 27)
    assert titles[0] == "Critical zone"
    assert body["Critical zone"] == (
        "**No critical zone was found**: no late run of layers fell below fidelity 15%. The selective and ultra "
        "configurations protect layers 23, 24, 25, 26, 27 **by depth, not by measurement**: a control, not a finding "
        "of the profile.")
    assert "Critical layer details" not in body
    control = body["Protected by depth (control)"]
    assert control.startswith("Protected by depth, not by measurement: the last group of layers by depth, shown for "
                              "comparison. Measured: avg fidelity 50% in these layers vs 50% over the other measured "
                              "layers (within the noise: not a measured difference).")
    assert body["Ultra config"].startswith("Not run: ultra raises the rank of measured critical layers, and the "
                                           "profile measured none.")
    text = "\n".join(body.values())
    for claim in ("most sensitive", "lowest fidelity", "fidelity fell", "MUST PROTECT", "Most critical", "Critical zone (measured)"):
        assert claim not in text, claim


def test_late_dip_headline_names_the_measured_zone():
    zone, source, body, titles = _report(measured_profile(LATE_DIP), ranks={24: 256})
    assert source == "profile" and zone == (24, 25, 26, 27)
    assert body["Critical zone"] == (
        "**Critical zone (measured): layers 24, 25, 26, 27**, each below fidelity 15%; avg fidelity 3.9% in these "
        "layers vs 77% over the other measured layers (outside the noise).")
    assert "| **Critical** | 23-27 | 9.4% |" in body["Layer fidelity profile"]
    assert "most sensitive group (avg fidelity 9.4% vs 78–81% elsewhere)" in body["Layer fidelity profile"]
    assert "| 24 | 6.2% | -0.019 | fidelity fell 25 points from layer 23 |" in body["Critical layer details"]
    assert "Protected by depth (control)" not in body and "control" not in body["Ultra config"]


def test_every_layer_below_threshold_protects_a_depth_control_not_the_whole_model():
    # at 2 bits every layer alone loses its answers: a zone of every layer made "selective" the baseline
    zone, source, body, _ = _report(measured_profile([3] * 28))
    assert source == "saturated" and zone == (23, 24, 25, 26, 27)
    assert body["Critical zone"] == (
        "**Every measured layer fell below fidelity 15%**: at this spec fidelity cannot single out a zone (the "
        "threshold is too high for it), and protecting every layer would only repeat the baseline. The selective and "
        "ultra configurations protect layers 23, 24, 25, 26, 27 **by depth, not by measurement**: a control, not a "
        "finding of the profile.")
    assert "Protected by depth (control)" in body and "Critical layer details" not in body


def test_a_late_dip_within_the_noise_is_not_a_measured_zone():
    # the SmolLM2 demo case: 24 samples, one late layer at 3/24 (12.5%, below 15%) while the others
    # keep 4-9 of 24: below the threshold, yet not measurably below the rest
    kept = [6, 8, 5, 7, 9, 6, 4, 7, 8, 5, 6, 7, 9, 8, 6, 5, 7, 8, 6, 7, 9, 5, 3, 6, 7, 8, 6, 5]
    zone, source, body, _ = _report(measured_profile(kept, n=24))
    assert source == "within noise" and zone == (23, 24, 25, 26, 27)
    assert body["Critical zone"].startswith(
        "**No critical zone was measured**: layer 22 fell below fidelity 15%, but it does not keep fewer answers "
        "than the other layers by more than the noise.")
    assert "Protected by depth (control)" in body and "Critical layer details" not in body
    assert body["Ultra config"].startswith("Not run")


def test_the_same_dip_over_many_samples_stands_out():
    # the same shape with 10x the samples and a real gap is a measured zone
    kept = [120] * 22 + [10] + [110] * 5
    zone, source, _, _ = _report(measured_profile(kept, n=240))
    assert source == "profile" and zone == (22,)


def test_the_lowest_of_many_noisy_layers_is_not_a_zone():
    # the demo's SmolLM2 profile at N = 24 (the commit after 1229e7f): layer 22 at 2/24, the others 4-14
    # of 24. Against the rest it is outside a 95% band but not outside the band corrected for having
    # picked the lowest of 30 layers.
    kept = [6, 10, 9, 12, 5, 14, 12, 6, 6, 8, 7, 6, 4, 4, 7, 6, 6, 5, 7, 10, 9, 6, 2, 9, 11, 9, 8, 9, 10, 6]
    profile = measured_profile(kept, n=24)
    from calderalab.sensitivity.noise import fidelity_gap

    assert fidelity_gap(profile, [22], [l for l in range(30) if l != 22]) > 0  # uncorrected: "different"
    zone, source, _, _ = _report(profile)
    assert source == "within noise" and zone == (25, 26, 27, 28, 29)
