"""The interval and per-family outputs of `calderalab sensitivity` on planted per-sample values."""

from planted_profiles import sampled_profile

from calderalab.report.sensitivity_report import write_outputs
from calderalab.sensitivity.intervals import zone_of

PNG = b"\x89PNG\r\n\x1a\n"
FAMS = ["arith"] * 30 + ["logic"] * 30 + ["time"] * 3
EARLY = [0.06] * 3 + [0.02] * 7
LATE = [0.02] * 7 + [0.06] * 3


def test_outputs_with_zone_metric_and_families(tmp_path):
    p = sampled_profile({"arith": LATE, "logic": EARLY, "time": LATE}, n=len(FAMS), families=FAMS, seed=0)
    paths = write_outputs(p, zone_of(p, "kl"), tmp_path, zone_metric="kl", by_family="family")
    for name in ("plot", "intervals", "families"):
        assert paths[name].read_bytes().startswith(PNG)
    text = paths["tables"].read_text()
    assert "## Intervals and the zone by kl" in text and "| noise floor |" in text
    assert "## Layers by task family" in text and "| arith | 30 |" in text and "| time | 3 |" in text
    assert "not tested: time" in text and "the layer profiles differ beyond the noise" in text


def test_no_zone_is_said_plainly(tmp_path):
    p = sampled_profile([0.02] * 10, n=40, seed=0)
    text = write_outputs(p, zone_of(p, "kl"), tmp_path, zone_metric="kl")["tables"].read_text()
    assert "No critical zone by kl: no layer is above both the noise floor and the typical layer" in text
