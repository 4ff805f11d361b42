import subprocess
import sys

import pytest

from calderalab.report.sensitivity_tables import (critical_table, group_table, noise_line,
                                                  ultra_table, zone_contrast, zone_notes)
from calderalab.eval.stats import wilson_interval
from calderalab.sensitivity import SensitivityProfile, critical_zone
from calderalab.sensitivity.noise import fidelity_error, noise_band
from planted_profiles import FLAT, LATE_DIP, N, measured_profile

REPORT_FID = {23: 0.130, 24: 0.044, 25: 0.026, 26: 0.016, 27: 0.006}
REPORT_MARGIN = {23: -0.027, 24: -0.032, 25: -0.036, 26: -0.040, 27: -0.054}


def report_profile():
    fid = {l: 0.82 for l in range(6)} | {l: 0.37 for l in range(6, 19)} | {l: 0.19 for l in range(19, 23)} | REPORT_FID
    mar = {l: 0.043 for l in range(6)} | {l: -0.012 for l in range(6, 19)} | {l: -0.023 for l in range(19, 23)} | REPORT_MARGIN
    return SensitivityProfile.from_values(28, fid, mar)


def _interpretations(table):
    return {line.split(" | ")[0].strip("| *"): line.split(" | ")[-1].rstrip(" |") for line in table.splitlines()[2:]}


def test_flat_profile_claims_no_zone_and_no_importance():
    p = measured_profile(FLAT)
    assert critical_zone(p, 0.15) == ()
    labels = _interpretations(group_table(p))
    assert labels == {g: "no different from the others (within noise)" for g in ("Early", "Middle", "Late", "Critical")}
    notes = zone_notes(p, (23, 24, 25, 26, 27))  # e.g. the depth-protected control set
    assert set(notes.values()) == {""}  # no layer differs measurably from its neighbour or the set
    assert zone_contrast(p, (23, 24, 25, 26, 27)).endswith("(within the noise: not a measured difference)")


def test_late_dip_is_named_with_its_numbers():
    p = measured_profile(LATE_DIP)
    zone = critical_zone(p, 0.15)
    assert zone == (24, 25, 26, 27)  # layer 23 (31%) is above the threshold
    labels = _interpretations(group_table(p))
    assert labels["Critical"] == "most sensitive group (avg fidelity 9.4% vs 78–81% elsewhere)"
    for g in ("Early", "Middle", "Late"):
        assert labels[g].startswith("higher than Critical; within noise of ")
    assert critical_table(p, zone) == (
        "| Layer | Fidelity | Margin | Notes |\n"
        "|-------|----------|--------|-------|\n"
        "| 24 | 6.2% | -0.019 | fidelity fell 25 points from layer 23 |\n"
        "| 25 | 3.1% | -0.019 |  |\n"
        "| 26 | 1.6% | -0.020 | 1 of 64 answers unchanged |\n"
        "| 27 | 4.7% | -0.019 |  |\n"
    )
    assert zone_contrast(p, zone) == "avg fidelity 3.9% in these layers vs 77% over the other measured layers (outside the noise)"


def test_a_poor_noise_floor_swallows_a_dip():
    """The same 25-point fall as above counts only while it exceeds numerics + sampling error."""
    kept = [52] * 23 + [36, 36, 36, 36, 36]
    clean, noisy = measured_profile(kept), measured_profile(kept, noise_fidelity=0.75)
    assert _interpretations(group_table(clean))["Critical"] == "most sensitive group (avg fidelity 56% vs 81% elsewhere)"
    assert zone_notes(clean, (23, 24))[23] == "fidelity fell 25 points from layer 22"
    assert set(_interpretations(group_table(noisy)).values()) == {"no different from the others (within noise)"}
    assert zone_notes(noisy, (23, 24)) == {23: "", 24: ""}


def test_noise_band_is_floor_plus_wilson_errors_in_quadrature():
    p = measured_profile(LATE_DIP, noise_fidelity=0.95)
    err = fidelity_error(p, [24, 25])
    assert err == pytest.approx((wilson_interval(4, N).half_width + wilson_interval(2, N).half_width) / 2)
    assert noise_band(p, err, 0.1) == pytest.approx(0.05 + (err**2 + 0.01) ** 0.5)
    assert fidelity_error(report_profile(), [23]) == 0.0  # published numbers: no sample count


def test_group_table_of_published_numbers():
    """The research report's own numbers (no sample count, perfect floor): every difference counts."""
    assert group_table(report_profile()) == (
        "| Layer Group | Layers | Avg Fidelity | Avg Margin | Interpretation |\n"
        "|-------------|--------|--------------|------------|----------------|\n"
        "| **Early** | 0-5 | 82% | +0.043 | least sensitive group (avg fidelity 82% vs 4.4–37% elsewhere) |\n"
        "| **Middle** | 6-18 | 37% | -0.012 | lower fidelity than Early; higher than Late and Critical |\n"
        "| **Late** | 19-22 | 19% | -0.023 | lower fidelity than Early and Middle; higher than Critical |\n"
        "| **Critical** | 23-27 | 4.4% | -0.038 | most sensitive group (avg fidelity 4.4% vs 19–82% elsewhere) |\n"
    )
    assert "Sample count unknown: differences are compared with the noise floor only" in noise_line(report_profile())


def test_critical_table_of_published_numbers_states_facts():
    p = report_profile()
    assert critical_table(p, critical_zone(p, 0.15)) == (
        "| Layer | Fidelity | Margin | Notes |\n"
        "|-------|----------|--------|-------|\n"
        "| 23 | 13.0% | -0.027 | fidelity fell 6.0 points from layer 22 |\n"
        "| 24 | 4.4% | -0.032 | fidelity fell 8.6 points from layer 23 |\n"
        "| 25 | 2.6% | -0.036 | fidelity fell 1.8 points from layer 24 |\n"
        "| 26 | 1.6% | -0.040 | fidelity fell 1.0 points from layer 25; fewer than 2% of answers unchanged |\n"
        "| 27 | 0.6% | -0.054 | lowest fidelity in the zone; fidelity fell 1.0 points from layer 26; "
        "fewer than 2% of answers unchanged |\n"
    )
    assert critical_table(p, ()).startswith("No critical zone")
    for text in (group_table(p), critical_table(p, (23, 24, 25, 26, 27))):
        for claim in ("MUST PROTECT", "Most critical", "Very sensitive", "Reasoning", "Multi-step", "Sharp drop"):
            assert claim not in text


def test_zone_notes_single_layer_and_ties_claim_nothing():
    p = SensitivityProfile.from_values(4, {2: 0.5, 3: 0.1}, {2: 0.0, 3: -0.01})
    assert zone_notes(p, (3,)) == {3: "fidelity fell 40 points from layer 2"}
    tie = SensitivityProfile.from_values(4, {2: 0.1, 3: 0.1}, {2: 0.0, 3: 0.0})
    assert zone_notes(tie, (2, 3)) == {2: "", 3: ""}
    rose = SensitivityProfile.from_values(4, {1: 0.05, 2: 0.3}, {1: 0.0, 2: 0.0})
    assert zone_notes(rose, (1, 2), noun="set") == {1: "lowest fidelity in the set", 2: "fidelity rose 25 points from layer 1"}


def test_ultra_table():
    assert ultra_table(32, {27: 64, 23: 256, 26: 80}) == (
        "| Layer | Uniform Rank | Ultra Rank | Rank Increase |\n"
        "|-------|--------------|------------|---------------|\n"
        "| 23 | 32 | 256 | 8x |\n"
        "| 26 | 32 | 80 | 2.5x |\n"
        "| 27 | 32 | 64 | 2x |\n"
    )


def test_report_tables_and_plots_import_no_torch():
    code = ("import calderalab.report.sensitivity_tables, calderalab.report.plots, calderalab.allocation, "
            "calderalab.search, sys; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
