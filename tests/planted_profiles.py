"""Planted sensitivity profiles for the report-wording tests (imported by name: tests/ is on
sys.path through its conftest): a flat one with no zone and one with a clear late dip."""

from __future__ import annotations

from calderalab.sensitivity.profile import LayerRow, RunMetrics, SensitivityProfile

N = 64
FLAT = [32, 30, 34, 33, 29, 35, 31, 32, 33, 30, 34, 32, 31, 33, 29, 35, 32, 30, 33, 31, 34, 32, 30, 33, 31, 32, 34, 30]
LATE_DIP = [52] * 6 + [50] * 13 + [51] * 4 + [20, 4, 2, 1, 3]


def measured_profile(kept, noise_fidelity=1.0, n=N):
    """A profile as `layer_sensitivity` makes it: layer l kept kept[l] of n answers; the noise floor
    (uncompressed vs itself) kept noise_fidelity of them."""
    noise = RunMetrics(noise_fidelity, 0.0, 0.0, 1.0, n, 5 * n)
    rows = tuple(LayerRow.against_noise(l, RunMetrics(k / n, -0.02 * (1 - k / n), 0.1 * (1 - k / n), 0.9, n, 5 * n), noise)
                 for l, k in enumerate(kept))
    return SensitivityProfile(len(kept), rows, noise, {"n_samples": n})
