"""Per-family layer sensitivity: the profile's samples grouped by task family (or category), each
group's per-layer metric with intervals and critical zone, and a test of whether the groups'
layer profiles differ by more than their sampling noise. No torch.

The test asks "do different tasks need different layers?", not "are some tasks harder?": it
compares each group's *shape*, the share of its total damage that falls on each layer
(damage(l) / sum over layers), with the shape of all other groups pooled. A family that is hurt
more everywhere has the same shape; one whose damage sits on other layers does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from calderalab.sensitivity.intervals import Interval, MetricIntervals, metric_intervals, metric_sums
from calderalab.sensitivity.profile import SensitivityProfile
from calderalab.sensitivity.settings import BootstrapSettings

GROUP_KEYS = {"family": "sample_families", "category": "sample_categories"}
SHAPE_METRICS = ("kl", "fidelity")  # damage >= 0, so a share of the total is defined
# A group's bootstrap needs a few instances to say anything: with 1 or 2 the resamples barely
# vary and a band of width ~0 would call any difference real. 5 is the least that gives a
# percentile interval more than a handful of distinct resample means.
MIN_GROUP_SIZE = 5


def sample_groups(profile: SensitivityProfile, key: str = "family") -> dict[str, tuple[int, ...]]:
    """{group name: sample indices}, from the per-sample labels the pipeline recorded in settings
    (every group, whatever its size; `family_profiles` keeps those of MIN_GROUP_SIZE or more)."""
    if key not in GROUP_KEYS:
        raise ValueError(f"group key {key!r} is not one of {', '.join(GROUP_KEYS)}")
    labels = profile.settings.get(GROUP_KEYS[key])
    n = profile.settings.get("n_samples", len(labels or ()))
    if not labels or len(labels) != n:
        raise ValueError(f"this profile records no {GROUP_KEYS[key]} for its {n} samples: re-run `calderalab sensitivity` "
                         "(profiles made before --by-family existed do not say which family each sample is)")
    out: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        out.setdefault(str(label), []).append(i)
    return {name: tuple(idx) for name, idx in sorted(out.items())}


@dataclass(frozen=True)
class FamilyProfiles:
    """One metric per group: intervals and zone per group, and the shape test against the rest.

    shape_diff: tested group -> layer -> share of the group's damage on that layer minus the rest's
    share, with a simultaneous interval over all tested groups x layers (`max_t_band`) from a
    bootstrap that resamples instances within each group independently (stratified). Only groups
    of at least MIN_GROUP_SIZE instances are tested (the rest are in `dropped`, and pooled into no
    "rest" either); with fewer than two such groups there is no test and shape_diff is empty.
    """

    metric: str
    groups: Mapping[str, tuple[int, ...]]
    intervals: Mapping[str, MetricIntervals]
    shape_diff: Mapping[str, Mapping[int, Interval]]
    settings: BootstrapSettings
    dropped: tuple[str, ...] = ()  # groups with fewer than MIN_GROUP_SIZE instances: mapped, not tested

    @property
    def differing(self) -> dict[str, tuple[int, ...]]:
        """{group: layers where its share differs from the rest's beyond the noise} (non-empty only)."""
        out = {g: tuple(l for l, iv in d.items() if iv.excludes_zero()) for g, d in self.shape_diff.items()}
        return {g: ls for g, ls in out.items() if ls}


def _shares(num: np.ndarray, den: np.ndarray, metric: str) -> np.ndarray:
    """Share of total damage per layer; (..., L) sums (numerator, denominator) -> (..., L). A group
    with no damage at all has no location: its share is uniform."""
    value = num / den
    dmg = 1.0 - value if metric == "fidelity" else value
    total = dmg.sum(-1, keepdims=True)
    uniform = np.full_like(dmg, 1.0 / dmg.shape[-1])
    return np.where(total > 0, dmg / np.where(total > 0, total, 1.0), uniform)


def family_profiles(profile: SensitivityProfile, metric: str, groups: Mapping[str, Sequence[int]],
                    settings: BootstrapSettings = BootstrapSettings()) -> FamilyProfiles:
    """Per-group intervals and zones (`metric_intervals` on the group's samples) and the shape test."""
    if metric not in SHAPE_METRICS:
        raise ValueError(f"per-family shapes need a non-negative damage: metric must be one of {', '.join(SHAPE_METRICS)}")
    intervals = {g: metric_intervals(profile, metric, settings, groups[g]) for g in groups}
    names = [g for g in groups if len(groups[g]) >= MIN_GROUP_SIZE]
    dropped = tuple(g for g in groups if g not in names)
    if len(names) < 2:  # nothing to test; the per-group maps still stand
        return FamilyProfiles(metric, {g: tuple(v) for g, v in groups.items()}, intervals, {}, settings, dropped)
    rows = [profile.row(l).metrics.per_sample for l in profile.layers]
    rng = np.random.default_rng(settings.seed)
    draws, points = {}, {}
    for g in names:  # per group: (B, L) numerator and denominator sums over its resampled instances
        pool = np.asarray(groups[g])
        idx = pool[rng.integers(0, pool.size, size=(settings.n_boot, pool.size))]
        sums = [metric_sums(v, metric, idx) for v in rows]
        full = [metric_sums(v, metric, pool[None, :]) for v in rows]
        draws[g] = (np.stack([s[0] for s in sums], -1), np.stack([s[1] for s in sums], -1))
        points[g] = (np.stack([s[0] for s in full], -1)[0], np.stack([s[1] for s in full], -1)[0])
    diff_draw, diff_point = {}, {}
    for g in names:
        rest = [o for o in names if o != g]
        rest_draw = [sum(draws[o][k] for o in rest) for k in (0, 1)]
        rest_point = [sum(points[o][k] for o in rest) for k in (0, 1)]
        diff_draw[g] = _shares(*draws[g], metric) - _shares(*rest_draw, metric)  # (B, L)
        diff_point[g] = _shares(*points[g], metric) - _shares(*rest_point, metric)  # (L,)
    bands = max_t_band(np.stack([diff_point[g] for g in names]), np.stack([diff_draw[g] for g in names], 1), settings.level)
    shape_diff = {g: {l: bands[j][i] for i, l in enumerate(profile.layers)} for j, g in enumerate(names)}
    return FamilyProfiles(metric, {g: tuple(v) for g, v in groups.items()}, intervals, shape_diff, settings, dropped)


def max_t_band(points: np.ndarray, draws: np.ndarray, level: float) -> list[list[Interval]]:
    """Simultaneous intervals for many estimates at once (the bootstrap max-t band).

    points: (G, L) estimates; draws: (B, G, L) their bootstrap replicates. Each estimate is scaled
    by its bootstrap sd; c is the `level` quantile over resamples of the largest scaled deviation
    |draw - point| / sd across all G x L; interval = point +- c * sd. Unlike per-estimate
    Bonferroni quantiles (for 90 estimates at 95%: the 0.03% tail, ~1 draw of 4000) c rests on the
    central 95% of B maxima. An estimate with sd 0 (e.g. an undamaged group) gets [point, point]."""
    sd = draws.std(axis=0)  # (G, L)
    safe = np.where(sd > 0, sd, 1.0)
    dev = np.where(sd > 0, np.abs(draws - points) / safe, 0.0).reshape(draws.shape[0], -1).max(axis=1)  # (B,)
    c = float(np.quantile(dev, level))
    return [[Interval(float(p), float(p - c * s), float(p + c * s)) for p, s in zip(prow, srow)]
            for prow, srow in zip(points, sd)]


def family_statement(fp: FamilyProfiles) -> str:
    """One sentence on whether the groups' layer profiles differ beyond their noise, with the test."""
    name = "KL" if fp.metric == "kl" else "Fidelity"
    if not fp.shape_diff:
        sizes = ", ".join(f"{g} {len(v)}" for g, v in fp.groups.items())
        return (f"{name}: no test of whether the groups differ: fewer than 2 groups have >= {MIN_GROUP_SIZE} instances "
                f"({sizes}); raise --samples (drawn evenly over the 23 families) or use --family-key category.")
    tested = [len(fp.groups[g]) for g in fp.shape_diff]
    size = (f"{min(tested)}" if min(tested) == max(tested) else f"{min(tested)}-{max(tested)}") + " instances per group"
    if fp.dropped:
        size += f"; groups under {MIN_GROUP_SIZE} instances not tested: {', '.join(fp.dropped)}"
    how = (f"share of each group's {'KL' if fp.metric == 'kl' else 'fidelity loss'} per layer vs the other tested groups "
           f"pooled; bootstrap over instances within each group ({fp.settings.n_boot} resamples, seed "
           f"{fp.settings.seed}), {100 * fp.settings.level:g}% simultaneous (max-t band) over {len(fp.shape_diff)} groups x "
           f"{len(next(iter(fp.shape_diff.values())))} layers")
    if not fp.differing:
        return (f"{name}: no group's layer profile differs from the others' by more than the noise ({size}; {how}). "
                "This does not show that the groups need the same layers: differences smaller than this noise would go unseen.")
    parts = [f"{g} at layer{'s' if len(ls) > 1 else ''} {', '.join(map(str, ls))}" for g, ls in fp.differing.items()]
    return f"{name}: the layer profiles differ beyond the noise: {'; '.join(parts)} ({size}; {how})."
