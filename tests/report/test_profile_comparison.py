"""`calderalab profiles`: the report's 7B-vs-72B table for any profiles, on planted profiles of different depths."""

import pytest
from planted_profiles import sampled_profile
from typer.testing import CliRunner

from calderalab.report.profile_comparison import ZoneRule, comparison_table, zone_text
from calderalab.sensitivity import SensitivityProfile

REPORT_FID = {23: 0.130, 24: 0.044, 25: 0.026, 26: 0.016, 27: 0.006}
REPORT_MARGIN = {23: -0.027, 24: -0.032, 25: -0.036, 26: -0.040, 27: -0.054}


def report_7b():
    """The research report's 7B numbers (28 layers, N = 64), shaped by its group averages."""
    fid = {l: 0.82 for l in range(6)} | {l: 0.37 for l in range(6, 19)} | {l: 0.19 for l in range(19, 23)} | REPORT_FID
    mar = {l: 0.043 for l in range(6)} | {l: -0.012 for l in range(6, 19)} | {l: -0.023 for l in range(19, 23)} | REPORT_MARGIN
    return SensitivityProfile.from_values(28, fid, mar, {"n_samples": 64, "model": "7B"})


def shallow():
    """10 layers, N = 8: early fidelity 50%, middle margin -0.020, critical (layers 8-9) margin -0.060, fidelity 5% there."""
    fid = {l: 0.5 for l in range(2)} | {l: 0.4 for l in range(2, 8)} | {8: 0.05, 9: 0.05}
    mar = {l: 0.0 for l in range(2)} | {l: -0.02 for l in range(2, 8)} | {8: -0.05, 9: -0.07}
    return SensitivityProfile.from_values(10, fid, mar, {"n_samples": 8})


def test_the_table_reproduces_the_reports_7b_column():
    table = comparison_table([("7B", report_7b()), ("small", shallow())])
    lines = table.splitlines()
    assert lines[0] == "| Metric | 7B (28 layers) | small (10 layers) |"
    assert lines[2] == "| Samples | 64 | 8 |"
    assert lines[3] == "| Early fidelity | 82% | 50% |"
    assert lines[4] == "| Middle margins | -0.012 | -0.020 |"
    assert lines[5] == "| Late margins | -0.038 | -0.060 |"  # the report: -0.038 over layers 23-27
    assert lines[6] == "| Critical zone | layers 23-27: last 5 (18% of depth) | layers 8-9: last 2 (20% of depth) |"


def test_zone_text_places_a_zone_in_relative_depth():
    assert zone_text((), 30) == "none"
    assert zone_text((13, 14, 15, 16, 17, 18, 19, 20), 30) == "layers 13-20: 8 (27% of depth, at 43–70%)"
    assert zone_text((4,), 10) == "layer 4: 1 (10% of depth, at 40–50%)"


def test_zones_by_intervals_on_profiles_of_different_depths():
    a = sampled_profile([0.02] * 5 + [0.06] * 3 + [0.02] * 4, seed=0)  # 12 layers, zone 5-7
    b = sampled_profile([0.02] * 16 + [0.06] * 4, seed=1)  # 20 layers, zone 16-19
    row = comparison_table([("a", a), ("b", b)], ZoneRule("kl")).splitlines()[6]
    assert row == "| Critical zone | layers 5-7: 3 (25% of depth, at 42–67%) | layers 16-19: last 4 (20% of depth) |"
    with pytest.raises(ValueError, match="no per-sample values"):
        comparison_table([("7B", report_7b())], ZoneRule("kl"))


def test_cli_profiles_writes_table_and_overlay(tmp_path):
    from calderalab.cli import app

    a = report_7b().save(tmp_path / "a.json")
    b = sampled_profile([0.02] * 16 + [0.06] * 4, seed=1).save(tmp_path / "b.json")
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["profiles", str(a), str(b), "--names", "7B,tiny", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "| Metric | 7B (28 layers) | tiny (20 layers) |" in result.output
    assert (out / "profiles.png").read_bytes().startswith(b"\x89PNG") and (out / "comparison.md").is_file()
    bad = CliRunner().invoke(app, ["profiles", str(a), str(b), "--names", "only-one"])
    assert bad.exit_code != 0 and "one per file" in str(bad.exception)
