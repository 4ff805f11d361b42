"""The small helpers user-facing errors are written with."""

from calderalab.errors import did_you_mean, format_bytes


def test_format_bytes():
    assert [format_bytes(n) for n in (0, 1023, 1024, 1536, 5 * 1024**3)] == ["0 B", "1023 B", "1.0 KiB", "1.5 KiB",
                                                                           "5.0 GiB"]
    assert format_bytes(None) == "unknown"


def test_did_you_mean_names_close_known_names_only():
    known = ["bits", "rank", "lr_bits", "rules"]
    assert did_you_mean(["bitz"], known) == " (did you mean 'bits'?)"
    assert did_you_mean(["protec"], known) == ""
    assert did_you_mean(["bitz", "rulez", "zzz"], known) == " (did you mean 'bits' for 'bitz', 'rules' for 'rulez'?)"
