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


def sampled_profile(kl_means, n=40, seed=0, families=None, keep=0.6, noise_kl=1e-6, tokens=6):
    """A profile with planted per-sample values: sample i at layer l has mean KL per token
    kl_means[l] (or kl_means[family][l] when kl_means is a dict keyed by `families[i]`) times a
    noise factor drawn from Gamma(4, 1/4) (mean 1, sd 0.5), keeps all answer tokens with
    probability `keep`, and a margin change of -kl per token plus N(0, 0.01) noise. The noise
    floor has KL ~ noise_kl and keeps every answer. `settings` records the sample families."""
    import numpy as np

    from calderalab.sensitivity.measure import aggregate, SampleComparison

    rng = np.random.default_rng(seed)
    fam = list(families) if families is not None else ["all"] * n
    means = kl_means if isinstance(kl_means, dict) else {f: kl_means for f in set(fam)}
    n_layers = len(next(iter(means.values())))

    def run(per_sample_kl, kept):
        return aggregate([SampleComparison(bool(k), tokens if k else tokens - 1, tokens,
                                           float(-kl * tokens + rng.normal(0, 0.01)), float(kl * tokens))
                          for kl, k in zip(per_sample_kl, kept)])

    noise = run(noise_kl * rng.gamma(4, 0.25, n), [True] * n)
    rows = []
    for layer in range(n_layers):
        kl = np.array([means[f][layer] for f in fam]) * rng.gamma(4, 0.25, n)
        rows.append(LayerRow.against_noise(layer, run(kl, rng.random(n) < keep), noise))
    return SensitivityProfile(n_layers, tuple(rows), noise, {"n_samples": n, "sample_families": fam})
