import json
import math

import pytest

from calderalab.sensitivity import LayerGroups, SensitivityProfile, critical_zone, group_summaries

# The report's 7B (28 layers) critical-layer numbers, the rest shaped like its group averages.
REPORT_FID = {23: 0.130, 24: 0.044, 25: 0.026, 26: 0.016, 27: 0.006}
REPORT_MARGIN = {23: -0.027, 24: -0.032, 25: -0.036, 26: -0.040, 27: -0.054}


def report_like_profile() -> SensitivityProfile:
    fid = {l: 0.82 for l in range(6)} | {l: 0.37 for l in range(6, 19)} | {l: 0.19 for l in range(19, 23)} | REPORT_FID
    mar = {l: 0.043 for l in range(6)} | {l: -0.012 for l in range(6, 19)} | {l: -0.023 for l in range(19, 23)} | REPORT_MARGIN
    return SensitivityProfile.from_values(28, fid, mar)


def test_default_groups_reproduce_report_split():
    r = LayerGroups().ranges(28)
    assert (r["early"], r["middle"], r["late"], r["critical"]) == (range(0, 6), range(6, 19), range(19, 23), range(23, 28))
    # scales by fraction of depth, every group non-empty even when shallow
    assert LayerGroups().starts(80) == (0, 17, 54, 66)
    assert all(len(x) >= 1 for x in LayerGroups().ranges(4).values())
    assert LayerGroups().group_of(27, 28) == "critical"
    with pytest.raises(ValueError, match="middle < late < critical"):
        LayerGroups(0.5, 0.4, 0.9)
    with pytest.raises(ValueError, match="at least 4"):
        LayerGroups().starts(3)


def test_group_summaries_average_measured_layers():
    s = {g.name: g for g in group_summaries(report_like_profile())}
    assert s["early"].avg_fidelity == pytest.approx(0.82)
    assert s["critical"].avg_fidelity == pytest.approx(sum(REPORT_FID.values()) / 5)  # 4.44%, the report says 4.5%
    assert s["critical"].avg_margin == pytest.approx(sum(REPORT_MARGIN.values()) / 5)


def test_critical_zone_of_report_profile():
    p = report_like_profile()
    assert critical_zone(p, 0.15) == (23, 24, 25, 26, 27)
    assert critical_zone(p, 0.03) == (25, 26, 27)
    assert critical_zone(p, 0.005) == ()  # nothing below threshold


def _prof(fids):
    n = len(fids)
    return SensitivityProfile.from_values(n, dict(enumerate(fids)), {l: 0.0 for l in range(n)})


def test_critical_zone_edge_cases():
    # a robust last layer does not hide the zone before it
    assert critical_zone(_prof([1, 1, 1, 1, 1, 1, 0.1, 0.1, 0.9, 1.0]), 0.5) == (6, 7)
    # an early-only run is not a late critical zone
    assert critical_zone(_prof([0.1, 0.1, 1, 1, 1, 1, 1, 1, 1, 1]), 0.5) == ()
    # the last run wins over an earlier one; a run may reach back before the late group
    assert critical_zone(_prof([1, 0.1, 1, 1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]), 0.5) == (4, 5, 6, 7, 8, 9)
    # an unmeasured layer breaks a run
    p = SensitivityProfile.from_values(10, {7: 0.1, 9: 0.1}, {7: 0.0, 9: 0.0})
    assert critical_zone(p, 0.5) == (9,)
    with pytest.raises(ValueError, match="threshold"):
        critical_zone(p, 0.0)


def test_profile_json_round_trip(tmp_path):
    p = report_like_profile()
    path = p.save(tmp_path / "profile.json")
    again = SensitivityProfile.load(path)
    assert again.fidelity() == p.fidelity() and again.margin() == p.margin()
    assert again == p and again.row(3).metrics.kl is None
    data = json.loads(path.read_text())
    data["format"] = 99
    with pytest.raises(ValueError, match="format"):
        SensitivityProfile.from_dict(data)
    with pytest.raises(ValueError, match="ascending"):
        SensitivityProfile(n_layers=4, rows=p.rows[:2][::-1], noise=p.noise)
