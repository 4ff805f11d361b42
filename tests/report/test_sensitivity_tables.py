import subprocess
import sys

from calderalab.report.sensitivity_tables import critical_table, group_table, ultra_table, zone_notes
from calderalab.sensitivity import SensitivityProfile, critical_zone

REPORT_FID = {23: 0.130, 24: 0.044, 25: 0.026, 26: 0.016, 27: 0.006}
REPORT_MARGIN = {23: -0.027, 24: -0.032, 25: -0.036, 26: -0.040, 27: -0.054}


def report_profile():
    fid = {l: 0.82 for l in range(6)} | {l: 0.37 for l in range(6, 19)} | {l: 0.19 for l in range(19, 23)} | REPORT_FID
    mar = {l: 0.043 for l in range(6)} | {l: -0.012 for l in range(6, 19)} | {l: -0.023 for l in range(19, 23)} | REPORT_MARGIN
    return SensitivityProfile.from_values(28, fid, mar)


def test_group_table_in_report_shape():
    assert group_table(report_profile()) == (
        "| Layer Group | Layers | Avg Fidelity | Avg Margin | Interpretation |\n"
        "|-------------|--------|--------------|------------|----------------|\n"
        "| **Early** | 0-5 | 82% | +0.043 | Token processing, relatively robust |\n"
        "| **Middle** | 6-18 | 37% | -0.012 | Feature extraction, compressible |\n"
        "| **Late** | 19-22 | 19% | -0.023 | Reasoning assembly |\n"
        "| **Critical** | 23-27 | 4.4% | -0.038 | Multi-step execution (MUST PROTECT) |\n"
    )


def test_critical_table_reproduces_report_notes():
    p = report_profile()
    assert critical_table(p, critical_zone(p, 0.15)) == (
        "| Layer | Fidelity | Margin | Notes |\n"
        "|-------|----------|--------|-------|\n"
        "| 23 | 13.0% | -0.027 | Start of critical zone |\n"
        "| 24 | 4.4% | -0.032 | Sharp drop |\n"
        "| 25 | 2.6% | -0.036 | Very sensitive |\n"
        "| 26 | 1.6% | -0.040 | Near-complete degradation |\n"
        "| 27 | 0.6% | -0.054 | **Most critical** |\n"
    )
    assert critical_table(p, ()).startswith("No critical zone")


def test_zone_notes_single_layer():
    p = SensitivityProfile.from_values(4, {3: 0.1}, {3: -0.01})
    assert zone_notes(p, (3,)) == {3: "**Most critical**"}


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
