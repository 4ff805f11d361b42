"""The `calderalab sensitivity` output folder: profile.json, sensitivity.md (group table, critical
table, ultra ranks; with a zone metric the interval table, with --by-family the family table) and
fidelity.png (+ intervals.png, families.png). Reads a profile; never measures one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from calderalab.sensitivity.profile import LayerGroups, SensitivityProfile
from calderalab.sensitivity.settings import BootstrapSettings


def write_outputs(profile: SensitivityProfile, zone: Sequence[int], out_dir: Path, groups: LayerGroups = LayerGroups(),
                  ultra: dict[int, int] | None = None, base_rank: int | None = None, zone_metric: str | None = None,
                  by_family: str | None = None, bootstrap: BootstrapSettings = BootstrapSettings()) -> dict[str, Path]:
    """profile.json, sensitivity.md and fidelity.png in `out_dir`; returns their paths by name.

    zone_metric: also the bootstrap interval table and intervals.png (the zone given is then the
    interval zone of that metric). by_family ("family" or "category"): also the per-group table,
    its statement and families.png."""
    from calderalab.report.plots import fidelity_plot
    from calderalab.report.sensitivity_tables import critical_table, group_table, noise_line, ultra_table

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"profile": profile.save(out_dir / "profile.json")}
    parts = ["# Layer sensitivity\n", noise_line(profile), "\n## Layer groups\n\n", group_table(profile, groups),
             "\n## Critical layers\n\n", critical_table(profile, zone)]
    if ultra and base_rank:
        parts += ["\n## Ultra ranks\n\n", ultra_table(base_rank, ultra)]
    if zone_metric:
        parts += interval_section(profile, zone_metric, bootstrap, out_dir, paths)
    if by_family:
        parts += family_section(profile, by_family, bootstrap, out_dir, paths)
    paths["tables"] = out_dir / "sensitivity.md"
    paths["tables"].write_text("".join(parts))
    paths["plot"] = fidelity_plot(profile, out_dir / "fidelity.png", zone, groups)
    return paths


def interval_section(profile: SensitivityProfile, zone_metric: str, bootstrap: BootstrapSettings, out_dir: Path,
                     paths: dict[str, Path]) -> list[str]:
    """The interval table and rule as Markdown parts; intervals.png into `paths`."""
    from calderalab.report.interval_tables import interval_table, zone_rule
    from calderalab.report.sensitivity_plots import interval_plot
    from calderalab.sensitivity.intervals import metric_intervals

    intervals = {m: metric_intervals(profile, m, bootstrap) for m in ("fidelity", "margin", "kl")}
    paths["intervals"] = interval_plot(profile, intervals, zone_metric, out_dir / "intervals.png")
    return [f"\n## Intervals and the zone by {zone_metric}\n\n", zone_rule(intervals[zone_metric]), "\n",
            interval_table(profile, intervals, zone_metric)]


def family_section(profile: SensitivityProfile, key: str, bootstrap: BootstrapSettings, out_dir: Path,
                   paths: dict[str, Path]) -> list[str]:
    """The per-group table and statements as Markdown parts; families.png into `paths`."""
    from calderalab.report.interval_tables import family_table
    from calderalab.report.sensitivity_plots import family_heatmap
    from calderalab.sensitivity.families import family_profiles, family_statement, sample_groups

    grouped = sample_groups(profile, key)
    by_metric = {m: family_profiles(profile, m, grouped, bootstrap) for m in ("kl", "fidelity")}
    paths["families"] = family_heatmap(by_metric, out_dir / "families.png")
    return [f"\n## Layers by task {key}\n\n", family_table(by_metric), "\n",
            *[family_statement(fp) + "\n\n" for fp in by_metric.values()]]
