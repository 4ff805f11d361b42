"""Markdown of a profile's bootstrap intervals, its interval zone and its per-family maps. No torch.

- interval table: Layer | Fidelity | Δ margin | KL (each with its 95% interval) | vs typical | step | zone
- family table: Family | N | mean KL | peak layer | zone (KL) | zone (fidelity) | shape differs at
"""

from __future__ import annotations

from typing import Mapping, Sequence

from calderalab.report.sensitivity_tables import _table, fmt_pct
from calderalab.sensitivity.families import FamilyProfiles
from calderalab.sensitivity.intervals import Interval, MetricIntervals
from calderalab.sensitivity.profile import SensitivityProfile

FORMATS = {"fidelity": lambda x: fmt_pct(x, 1), "margin": lambda x: f"{x:+.4f}", "kl": lambda x: f"{x:.3g}"}


def interval_text(metric: str, iv: Interval) -> str:
    """'0.0123 [0.0101, 0.0150]' in the metric's own format."""
    f = FORMATS[metric]
    return f"{f(iv.point)} [{f(iv.low)}, {f(iv.high)}]"


def layer_span(layers: Sequence[int]) -> str:
    """'13-20' for a run, '' for none."""
    if not layers:
        return ""
    return f"{layers[0]}" if len(layers) == 1 else f"{layers[0]}-{layers[-1]}"


def zone_rule(mi: MetricIntervals) -> str:
    """The rule in one paragraph, with its settings, and the zone it found (or that it found none)."""
    s = mi.settings
    found = (f"critical zone by {mi.metric}: layers {layer_span(mi.zone)}" if mi.zone else
             f"no critical zone by {mi.metric}: no layer is above both the noise floor and the typical layer beyond the noise")
    return (f"{found[0].upper()}{found[1:]}. Rule: a layer is elevated when its {mi.metric} interval lies above the "
            f"noise floor's and its excess over the typical layer (the median over layers, within each resample) has a "
            f"{100 * s.level:g}% simultaneous (Bonferroni over {len(mi.values)} layers) lower bound above 0; the zone is "
            f"the run of consecutive elevated layers with the largest excess. Intervals: percentile bootstrap over the "
            f"N = {mi.n_samples} samples, {s.n_boot} paired resamples, seed {s.seed}. A step (▲ worse, ▼ better than the "
            f"previous layer) is a paired sign-flip test of the per-sample differences, p < {1 - s.level:g} / "
            f"{max(1, len(mi.steps))} pairs.\n")


def interval_table(profile: SensitivityProfile, intervals: Mapping[str, MetricIntervals], zone_metric: str) -> str:
    """Per layer: every metric with its interval; the zone metric's excess over the typical layer,
    its step from the previous layer, and zone membership."""
    mi = intervals[zone_metric]
    rows = []
    for l in profile.layers:
        step = mi.steps.get(l)
        mark = "" if step is None or l not in mi.step_layers else ("▲" if step[0] > 0 else "▼")
        cells = [str(l)] + [interval_text(m, intervals[m].values[l]) for m in ("fidelity", "margin", "kl")]
        cells += ["elevated" if l in mi.elevated else "", f"{mark} p={step[1]:.2g}" if step else "", "zone" if l in mi.zone else ""]
        rows.append(cells)
    noise = ["noise floor"] + [interval_text(m, intervals[m].noise) for m in ("fidelity", "margin", "kl")] + ["", "", ""]
    header = ["Layer", "Fidelity [95% CI]", "Δ margin [95% CI]", "KL [95% CI]", f"vs typical ({zone_metric})",
              f"step ({zone_metric})", "Zone"]
    return _table(header, [*rows, noise])


def family_table(by_metric: Mapping[str, FamilyProfiles]) -> str:
    """One row per group: N, mean KL over layers, the layer of its largest KL, its zones, and the
    layers where its share of KL (or of fidelity loss) differs from the other groups' beyond the noise."""
    kl, fid = by_metric["kl"], by_metric["fidelity"]
    rows = []
    for g, idx in kl.groups.items():
        values = kl.intervals[g].values
        peak = max(values, key=lambda l: values[l].point)
        mean = sum(v.point for v in values.values()) / len(values)
        differs = [f"{m}: {', '.join(map(str, fp.differing[g]))}" for m, fp in by_metric.items() if g in fp.differing]
        verdict = "; ".join(differs) or ("no" if g in kl.shape_diff else "not tested (too few instances)")
        zones = [("too few" if g in fp.dropped else layer_span(fp.intervals[g].zone) or "none") for fp in (kl, fid)]
        rows.append([g, str(len(idx)), f"{mean:.3g}", str(peak), *zones, verdict])
    return _table(["Group", "N", "mean KL", "peak KL layer", "zone (KL)", "zone (fidelity)", "shape differs at"], rows)
