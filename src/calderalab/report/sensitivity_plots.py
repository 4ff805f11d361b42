"""PNG plots of bootstrap intervals, per-family layer maps and cross-model profiles (Agg; no torch).

- `interval_plot`: fidelity, Δ margin and KL per layer with 95% intervals, the noise floor, the
  interval zone hatched and the layers that step away from their neighbour beyond the noise marked;
- `family_heatmap`: layers x groups, KL and fidelity, cells where a group's shape differs boxed;
- `overlay_plot`: several profiles' fidelity, margin and KL against relative depth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from calderalab.report.plots import _save
from calderalab.sensitivity.families import FamilyProfiles
from calderalab.sensitivity.intervals import MetricIntervals
from calderalab.sensitivity.profile import SensitivityProfile

PANELS = (("fidelity", "Fidelity (%)", 100.0), ("margin", "Δ margin (nats)", 1.0), ("kl", "KL (nats/token)", 1.0))


def interval_plot(profile: SensitivityProfile, intervals: Mapping[str, MetricIntervals], zone_metric: str,
                  path: str | Path, title: str | None = None) -> Path:
    """Three panels against layer index, error bars = 95% bootstrap intervals; grey band = the noise
    floor's interval; hatch = the zone; ▲/▼ between two layers = a step beyond the noise."""
    mi = intervals[zone_metric]
    fig = Figure(figsize=(9, 7.5))
    axes = fig.subplots(3, 1, sharex=True)
    layers = list(profile.layers)
    for ax, (metric, label, scale) in zip(axes, PANELS):
        ivs = [intervals[metric].values[l] for l in layers]
        points = np.array([iv.point for iv in ivs]) * scale
        err = np.array([[iv.point - iv.low for iv in ivs], [iv.high - iv.point for iv in ivs]]) * scale
        colour = ["#c0392b" if metric == zone_metric and l in mi.elevated else "#1f4e79" for l in layers]
        ax.errorbar(layers, points, yerr=err, fmt="none", ecolor="#7f8c8d", capsize=2, zorder=2)
        ax.scatter(layers, points, c=colour, s=14, zorder=3)
        noise = intervals[metric].noise
        ax.axhspan(noise.low * scale, noise.high * scale, color="#bbbbbb", alpha=0.5, zorder=1)
        ax.axhline(noise.point * scale, ls="--", color="#888", lw=0.8, zorder=1)
        if mi.zone:
            ax.axvspan(min(mi.zone) - 0.5, max(mi.zone) + 0.5, fill=False, hatch="//", edgecolor="#e6a19a", lw=0, zorder=0)
        ax.set_ylabel(label + ("\n(zone metric)" if metric == zone_metric else ""), fontsize=9)
        if metric == zone_metric:
            _mark_steps(ax, mi)
    axes[-1].set_xlabel("Layer index")
    axes[-1].set_xlim(-0.5, profile.n_layers - 0.5)
    zone = f"zone {min(mi.zone)}-{max(mi.zone)}" if mi.zone else "no zone"
    axes[0].set_title(title or f"Per-layer sensitivity with 95% bootstrap intervals (N = {mi.n_samples}; "
                      f"{zone} by {zone_metric}; red = elevated; ▲▼ = step beyond noise)", fontsize=9)
    return _save(fig, path)


def _mark_steps(ax, mi: MetricIntervals) -> None:
    top = ax.get_ylim()[1]
    for l in mi.step_layers:
        up = mi.steps[l][0] > 0  # damage rose from l-1 to l
        ax.axvline(l - 0.5, color="#8e44ad", lw=0.8, ls=":", zorder=1)
        ax.annotate("▲" if up else "▼", (l - 0.5, top), ha="center", va="top", fontsize=9, color="#8e44ad")


def family_heatmap(by_metric: Mapping[str, FamilyProfiles], path: str | Path, title: str | None = None) -> Path:
    """Two heatmaps (KL, fidelity): rows = layers, columns = groups; a box marks a cell where the
    group's share of damage differs from the other groups' beyond the noise; ● = in the group's zone."""
    metrics = [m for m in ("kl", "fidelity") if m in by_metric]
    groups = list(by_metric[metrics[0]].groups)
    fig = Figure(figsize=(len(metrics) * (2.8 + 0.5 * len(groups)), 7), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for ax, metric in zip(axes, metrics):
        fp = by_metric[metric]
        layers = list(next(iter(fp.intervals.values())).values)
        grid = np.array([[fp.intervals[g].values[l].point for g in groups] for l in layers])
        image = ax.imshow(100 * grid if metric == "fidelity" else grid, aspect="auto", origin="lower",
                          cmap="viridis" if metric == "fidelity" else "magma_r")
        fig.colorbar(image, ax=ax, shrink=0.8, label="fidelity (%)" if metric == "fidelity" else "KL (nats/token)")
        for j, g in enumerate(groups):
            for i, l in enumerate(layers):
                if l in fp.differing.get(g, ()):
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#00bcd4", lw=2))
                if l in fp.intervals[g].zone and g not in fp.dropped:  # too few instances for a zone
                    ax.plot(j, i, "o", ms=3, color="white")
        ax.set_xticks(range(len(groups)), [f"{g} ({len(fp.groups[g])})" for g in groups], rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(layers)), [str(l) for l in layers], fontsize=7)
        ax.set_title(metric.upper() if metric == "kl" else "Fidelity", fontsize=10)
    axes[0].set_ylabel("Layer")
    fig.suptitle(title or "Layers x task groups (N per group in brackets; ● zone; box = shape differs beyond noise)", fontsize=9)
    return _save(fig, path)


def overlay_plot(profiles: Sequence[tuple[str, SensitivityProfile]], path: str | Path,
                 zones: Mapping[str, Sequence[int]] | None = None, title: str | None = None) -> Path:
    """Fidelity, Δ margin and (where every profile has it) KL against relative depth (layer + 0.5) / L,
    one line per profile; a profile's zone is drawn as a thick bar under the fidelity panel."""
    if not profiles:
        raise ValueError("no profiles to plot")
    panels = [p for p in PANELS if p[0] != "kl" or all(r.metrics.kl is not None for _, pr in profiles for r in pr.rows)]
    fig = Figure(figsize=(9, 2.6 * len(panels)))
    axes = np.atleast_1d(fig.subplots(len(panels), 1, sharex=True))
    for k, (name, profile) in enumerate(profiles):
        depth = [(l + 0.5) / profile.n_layers for l in profile.layers]
        colour = f"C{k}"
        for ax, (metric, _, scale) in zip(axes, panels):
            values = [scale * getattr(profile.row(l).metrics, metric) for l in profile.layers]
            ax.plot(depth, values, "o-", ms=3, color=colour, label=f"{name} ({profile.n_layers} layers)")
        zone = (zones or {}).get(name)
        if zone:
            axes[0].plot([min(zone) / profile.n_layers, (max(zone) + 1) / profile.n_layers], [-4 - 4 * k] * 2,
                         lw=5, color=colour, solid_capstyle="butt")
    for ax, (_, label, _) in zip(axes, panels):
        ax.set_ylabel(label, fontsize=9)
    if zones:  # room for every zone bar below the fidelity values
        axes[0].set_ylim(bottom=-4 - 4 * len(profiles))
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over a line or bar
    axes[-1].set_xlabel("Relative depth (layer + 0.5) / number of layers")
    axes[-1].set_xlim(0, 1)
    axes[0].set_title(title or "Profiles on relative depth (bars under the fidelity panel: critical zones)", fontsize=9)
    return _save(fig, path)
