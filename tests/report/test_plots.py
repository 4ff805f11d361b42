import pytest

from calderalab.report.plots import RatePoint, execution_vs_bits_plot, execution_vs_protected_plot, fidelity_plot
from calderalab.sensitivity import SensitivityProfile

PNG = b"\x89PNG\r\n\x1a\n"


def _u_profile(n=28):
    fid = {l: max(0.005, 0.9 - 0.05 * l) if l < 23 else [0.13, 0.044, 0.026, 0.016, 0.006][l - 23] for l in range(n)}
    return SensitivityProfile.from_values(n, fid, {l: 0.04 - 0.003 * l for l in range(n)}, {"n_samples": 64, "spec_key": "caldera-b3-r32"})


def test_fidelity_plot_writes_png(tmp_path):
    out = fidelity_plot(_u_profile(), tmp_path / "sub" / "u.png", zone=(23, 24, 25, 26, 27))
    data = out.read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000


def test_execution_plots_write_png(tmp_path):
    pts = [RatePoint(k, r, max(0, r - 0.2), min(1, r + 0.2)) for k, r in [(0, 0.29), (1, 0.43), (3, 0.29), (5, 0.43), (10, 0.43)]]
    assert execution_vs_protected_plot(pts, tmp_path / "p.png", baseline=0.43).read_bytes().startswith(PNG)
    series = {"uniform": {3.0: [0.14, 0.2, 0.1], 4.0: [0.29, 0.3]}, "selective": {3.0: [0.57], 4.0: [0.29, 0.35]}}
    assert execution_vs_bits_plot(series, tmp_path / "b.png").read_bytes().startswith(PNG)
    with_lines = execution_vs_bits_plot(series, tmp_path / "c.png", baseline=0.4, chance=0.25)
    assert with_lines.read_bytes().startswith(PNG) and with_lines.read_bytes() != (tmp_path / "b.png").read_bytes()
    with pytest.raises(ValueError, match="no points"):
        execution_vs_protected_plot([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no runs"):
        execution_vs_bits_plot({"a": {3.0: []}}, tmp_path / "y.png")


def test_ladder_plot_accepts_rates_at_the_interval_ends(tmp_path):
    from calderalab.eval.stats import wilson_interval
    from calderalab.report.plots import LadderSeries, ladder_plot

    def point(k, n):
        iv = wilson_interval(k, n)
        return iv.estimate, iv.low, iv.high, 0.25

    series = LadderSeries("Baseline", {1: point(0, 3), 2: point(3, 3)}, {1: point(0, 9), 2: point(9, 9)})
    assert ladder_plot([series], tmp_path / "ladder.png").stat().st_size > 1000
