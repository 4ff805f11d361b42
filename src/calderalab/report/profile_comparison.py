"""Several sensitivity profiles side by side: the research report's "7B vs 72B" table for any
profiles, and their overlay on relative depth. Reads profiles; never measures one. No torch.

Rows, in the report's terms, over each model's own layer groups (`LayerGroups`, fractions of depth,
so a 28-layer and an 80-layer model are cut at the same relative depths):
- Samples: the probe samples N of the profile (0 = published numbers, no N);
- Early fidelity: mean fidelity over the early group;
- Middle margins: mean margin change over the middle group;
- Late margins: mean margin change over the critical group (the last ~18% of depth: the report's
  7B "late" figure, -0.038, is the mean over its layers 23-27);
- Critical zone: its layers, its share of depth and where it sits in relative depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from calderalab.report.sensitivity_tables import _table, fmt_pct
from calderalab.sensitivity.noise import threshold_zone
from calderalab.sensitivity.profile import LayerGroups, SensitivityProfile, group_summaries
from calderalab.sensitivity.settings import BootstrapSettings, SensitivitySettings


@dataclass(frozen=True)
class ZoneRule:
    """Which critical zone each profile gets: the fidelity threshold rule (metric None) or the
    bootstrap rule on `metric` (needs per-sample values in every profile)."""

    metric: str | None = None
    threshold: float = SensitivitySettings().threshold
    bootstrap: BootstrapSettings = BootstrapSettings()

    def zone(self, profile: SensitivityProfile, groups: LayerGroups) -> tuple[int, ...]:
        if self.metric is None:
            return threshold_zone(profile, self.threshold, groups)
        from calderalab.sensitivity.intervals import zone_of

        return zone_of(profile, self.metric, self.bootstrap)

    def describe(self) -> str:
        if self.metric is None:
            return f"the last run of layers below {fmt_pct(self.threshold)} fidelity that reaches the late group"
        return (f"bootstrap rule on {self.metric} (elevated above the noise floor and the typical layer, "
                f"{100 * self.bootstrap.level:g}% simultaneous; {self.bootstrap.n_boot} resamples, seed {self.bootstrap.seed})")


def zone_text(zone: Sequence[int], n_layers: int) -> str:
    """'layers 23-27: last 5 (18% of depth)' / 'layers 13-20: 8 (27% of depth, at 43–70%)' / 'none'."""
    if not zone:
        return "none"
    lo, hi, k = min(zone), max(zone), len(zone)
    span = f"layer {lo}" if k == 1 else f"layers {lo}-{hi}"
    share = fmt_pct(k / n_layers)
    if hi == n_layers - 1:
        return f"{span}: last {k} ({share} of depth)"
    return f"{span}: {k} ({share} of depth, at {fmt_pct(lo / n_layers)[:-1]}–{fmt_pct((hi + 1) / n_layers)})"


def comparison_table(profiles: Sequence[tuple[str, SensitivityProfile]], rule: ZoneRule = ZoneRule(),
                     groups: LayerGroups = LayerGroups()) -> str:
    """The report's 'Metric | 7B (28 layers) | 72B (80 layers)' table for any profiles."""
    if not profiles:
        raise ValueError("no profiles to compare")
    columns = []
    for _, p in profiles:
        g = {s.name: s for s in group_summaries(p, groups)}
        missing = [name for name in ("early", "middle", "critical") if name not in g]
        if missing:
            raise ValueError(f"a profile of {p.n_layers} layers has no measured layer in the {', '.join(missing)} "
                             "group(s): profile every layer (no --layers) to compare models")
        n = p.settings.get("n_samples", p.noise.n_samples)
        columns.append([str(n) if n else "unknown (published numbers)", fmt_pct(g["early"].avg_fidelity),
                        f"{g['middle'].avg_margin:+.3f}", f"{g['critical'].avg_margin:+.3f}",
                        zone_text(rule.zone(p, groups), p.n_layers)])
    names = ["Samples", "Early fidelity", "Middle margins", "Late margins", "Critical zone"]
    header = ["Metric", *[f"{name} ({p.n_layers} layers)" for name, p in profiles]]
    return _table(header, [[names[i], *[c[i] for c in columns]] for i in range(len(names))])


def write_comparison(profiles: Sequence[tuple[str, SensitivityProfile]], out_dir: Path, rule: ZoneRule = ZoneRule(),
                     groups: LayerGroups = LayerGroups()) -> dict[str, Path]:
    """comparison.md (the table, the definitions and the zone rule) and profiles.png in out_dir."""
    from calderalab.report.sensitivity_plots import overlay_plot

    out_dir.mkdir(parents=True, exist_ok=True)
    table = comparison_table(profiles, rule, groups)
    notes = ("Early fidelity: mean over each model's early group; middle / late margins: mean margin change over its "
             "middle / critical group (groups at the same fractions of depth for every model); critical zone: "
             f"{rule.describe()}. Samples differ between profiles: a profile of few samples has wide intervals.\n")
    md = out_dir / "comparison.md"
    md.write_text("# Sensitivity profiles compared\n\n" + table + "\n" + notes)
    zones = {name: rule.zone(p, groups) for name, p in profiles}
    return {"tables": md, "plot": overlay_plot(profiles, out_dir / "profiles.png", zones)}
