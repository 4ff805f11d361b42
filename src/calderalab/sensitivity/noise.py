"""When a fidelity difference between layer sets is real: the noise floor plus sampling error. No torch.

Used by the zone choice (a run of layers below the threshold is a measured zone only when it stands
out from the other layers by more than this) and by every label the report derives from a profile.
"""

from __future__ import annotations

import math
from typing import Sequence

from calderalab.eval.stats import wilson_interval
from calderalab.sensitivity.profile import LayerGroups, SensitivityProfile, critical_zone


def fidelity_error(profile: SensitivityProfile, layers: Sequence[int], level: float = 0.95) -> float:
    """Sampling error of the average fidelity over `layers`: the mean of their Wilson half-widths at `level`
    (a layer's fidelity is a share of its n_samples). The mean of the errors bounds the error of the
    mean whatever the correlation between layers, which share their samples. 0 when n is unknown
    (a profile built from published numbers)."""
    widths = []
    for layer in layers:
        m = profile.row(layer).metrics
        widths.append(wilson_interval(round(m.fidelity * m.n_samples), m.n_samples, level).half_width
                      if m.n_samples else 0.0)
    return sum(widths) / len(widths)


def noise_band(profile: SensitivityProfile, error_a: float, error_b: float) -> float:
    """The smallest fidelity difference that counts as real: the noise floor's fidelity loss (the
    uncompressed model against itself, another batch layout: numerics alone) plus the two sampling
    errors in quadrature (independent errors; layers share samples, which if anything narrows the
    true spread of a difference, so this errs towards 'within noise')."""
    return (1.0 - profile.noise.fidelity) + math.hypot(error_a, error_b)


def fidelity_gap(profile: SensitivityProfile, a: Sequence[int], b: Sequence[int], level: float = 0.95) -> float:
    """Average fidelity of b minus a when the difference is outside `noise_band` (sampling errors
    at `level`), else 0.0."""
    fa = sum(profile.row(l).metrics.fidelity for l in a) / len(a)
    fb = sum(profile.row(l).metrics.fidelity for l in b) / len(b)
    band = noise_band(profile, fidelity_error(profile, a, level), fidelity_error(profile, b, level))
    return fb - fa if abs(fb - fa) > band else 0.0


def stands_out(profile: SensitivityProfile, zone: Sequence[int]) -> bool:
    """True when the measured layers outside `zone` keep measurably more answers than the zone does
    (False when the zone is every measured layer).

    The zone was picked as the lowest run among the measured layers, so the lowest of many noisy
    layers would look low by chance: the sampling errors are taken at the Bonferroni level
    1 − 0.05 / n_layers (on SmolLM2 at N = 24, one layer of 30 at 2/24 against ~8/24 elsewhere is
    outside the 95% band but inside the corrected one; a planted dip of 0/4 against 4/4 is outside both)."""
    inside = set(zone)
    rest = [l for l in profile.layers if l not in inside]
    level = 1 - 0.05 / len(profile.layers)
    return bool(zone) and bool(rest) and fidelity_gap(profile, zone, rest, level) > 0


def threshold_zone(profile: SensitivityProfile, threshold: float, groups: LayerGroups = LayerGroups()) -> tuple[int, ...]:
    """The fidelity-threshold zone (`critical_zone`) when it `stands_out` from the other layers, or
    when it is every measured layer (saturated: the caller says so); () otherwise. The one threshold
    rule of `calderalab sensitivity`, `profiles` and the study."""
    zone = critical_zone(profile, threshold, groups)
    return zone if not zone or len(zone) == len(profile.layers) or stands_out(profile, zone) else ()
