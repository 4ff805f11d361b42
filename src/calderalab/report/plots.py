"""PNG plots for reports (matplotlib, Agg backend; no torch, no pyplot global state).

- fidelity across layers (the U-shape) with group shading, critical zone and a margin panel;
- execution vs number of protected layers with Wilson error bars;
- execution vs bits per weight with mean ± std over seeds;
- the difficulty ladder: understanding and execution against the number of steps k;
- hidden-state drift against depth, uniform against selective (activations);
- recovery tuning: training KL per step against the source and tuned stores' KL (tune);
- the coherence check's three measures per compressed model against their flag thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from calderalab.sensitivity.profile import LayerGroups, SensitivityProfile

GROUP_COLOURS = {"early": "#e8f1fa", "middle": "#f4f4f4", "late": "#fdf1e3", "critical": "#fbe3e3"}


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def fidelity_plot(
    profile: SensitivityProfile,
    path: str | Path,
    zone: Sequence[int] = (),
    groups: LayerGroups = LayerGroups(),
    title: str | None = None,
) -> Path:
    """Fidelity (%) per layer on top, margin change below; groups shaded, critical zone hatched."""
    fig = Figure(figsize=(9, 5.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    layers = list(profile.layers)
    fid = [100 * profile.row(l).metrics.fidelity for l in layers]
    margin = [profile.row(l).metrics.margin for l in layers]
    for ax in (top, bottom):
        for name, span in groups.ranges(profile.n_layers).items():
            ax.axvspan(span.start - 0.5, span.stop - 0.5, color=GROUP_COLOURS[name], zorder=0)
        if zone:
            ax.axvspan(min(zone) - 0.5, max(zone) + 0.5, fill=False, hatch="//", edgecolor="#e6a19a", lw=0, zorder=1)
    for name, span in groups.ranges(profile.n_layers).items():
        top.text((span.start + span.stop - 1) / 2, 103, name, ha="center", va="bottom", fontsize=8, color="#555")
    top.plot(layers, fid, "o-", color="#1f4e79", ms=4, zorder=3, label="fidelity")
    top.axhline(100 * profile.noise.fidelity, ls="--", color="#888", lw=1, zorder=2, label="noise floor")
    top.set_ylim(-3, 112)
    top.set_ylabel("Fidelity (%)")
    top.legend(loc="lower left", fontsize=8)
    bottom.bar(layers, margin, color=["#c0392b" if m < 0 else "#27ae60" for m in margin], zorder=3)
    bottom.axhline(0, color="black", lw=0.8)
    bottom.set_ylabel("Δ margin (nats)")
    bottom.set_xlabel("Layer index")
    bottom.set_xlim(-0.5, profile.n_layers - 0.5)
    spec = profile.settings.get("spec_key", "")
    top.set_title(title or f"Per-layer sensitivity {spec} (N = {profile.settings.get('n_samples', '?')})".replace("  ", " "))
    if zone:
        top.annotate(f"critical zone {min(zone)}-{max(zone)}", xy=(max(zone), 5), xytext=(-5, 20),
                     textcoords="offset points", ha="right", fontsize=8, color="#c0392b")
    return _save(fig, path)


@dataclass(frozen=True)
class RatePoint:
    """A rate with its interval, e.g. execution with k layers protected (Wilson 95%)."""

    x: float
    rate: float
    low: float
    high: float


def execution_vs_protected_plot(
    points: Sequence[RatePoint], path: str | Path, baseline: float | None = None, title: str = "Execution vs protected layers"
) -> Path:
    """Execution rate (%) against the number of protected last layers, Wilson error bars."""
    if not points:
        raise ValueError("no points to plot")
    pts = sorted(points, key=lambda p: p.x)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.errorbar(
        [p.x for p in pts], [100 * p.rate for p in pts],
        yerr=[[100 * (p.rate - p.low) for p in pts], [100 * (p.high - p.rate) for p in pts]],
        fmt="o-", capsize=4, color="#1f4e79", label="execution (Wilson 95% CI)",
    )
    if baseline is not None:
        ax.axhline(100 * baseline, ls="--", color="#888", label="uncompressed baseline")
    ax.set_xlabel("Protected layers (last k)")
    ax.set_ylabel("Execution (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def execution_vs_bits_plot(
    series: Mapping[str, Mapping[float, Sequence[float]]], path: str | Path, title: str = "Execution vs bits per weight",
    baseline: float | None = None, chance: float | None = None,
) -> Path:
    """One line per configuration: mean ± std (ddof=1) of execution over seeds at each bpw; the
    uncompressed baseline (dashed) and the execution probe's chance level (dotted), when given, so a
    line at chance is seen as such."""
    if not series:
        raise ValueError("no series to plot")
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for label, by_bits in series.items():
        xs = sorted(by_bits)
        means, stds = [], []
        for x in xs:
            vals = [100 * v for v in by_bits[x]]
            if not vals:
                raise ValueError(f"series {label!r} has no runs at {x} bits")
            mean = sum(vals) / len(vals)
            var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1) if len(vals) > 1 else 0.0
            means.append(mean)
            stds.append(var**0.5)
        ax.errorbar(xs, means, yerr=stds, fmt="o-", capsize=4, label=label)
    if baseline is not None:
        ax.axhline(100 * baseline, ls="--", color="#888", label="uncompressed baseline")
    if chance is not None:
        ax.axhline(100 * chance, ls=":", color="#444", label="chance (uniform guess)")
    ax.set_xlabel("Bits per weight")
    ax.set_ylabel("Execution (%, mean ± std over seeds)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


@dataclass(frozen=True)
class LadderSeries:
    """One configuration's rates against the number of steps k: k -> (rate, low, high, chance)."""

    label: str
    understanding: Mapping[int, tuple[float, float, float, float]]
    execution: Mapping[int, tuple[float, float, float, float]]


def ladder_plot(series: Sequence[LadderSeries], path: str | Path, title: str = "Rates against the number of steps") -> Path:
    """Two panels (understanding, execution): rate (%) against k, one line per configuration, Wilson
    error bars, and the chance level as a dotted grey line."""
    if not series:
        raise ValueError("no ladder series to plot")
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, probe in zip(axes, ("understanding", "execution")):
        chance: dict[int, float] = {}
        for i, s in enumerate(series):
            points = getattr(s, probe)
            ks = sorted(points)
            if not ks:
                continue
            offset = (i - (len(series) - 1) / 2) * 0.06  # keep overlapping error bars apart
            rates = [100 * points[k][0] for k in ks]
            # max(0, ·): at 0/n or n/n the Wilson bound equals the rate up to float round-off
            err = [[max(0.0, 100 * (points[k][0] - points[k][1])) for k in ks],
                   [max(0.0, 100 * (points[k][2] - points[k][0])) for k in ks]]
            ax.errorbar([k + offset for k in ks], rates, yerr=err, fmt="o-", capsize=3, ms=4, label=s.label)
            chance.update({k: 100 * points[k][3] for k in ks})
        if chance:
            ks = sorted(chance)
            ax.plot(ks, [chance[k] for k in ks], ":", color="#888", label="chance")
        ax.set_title(probe.capitalize())
        ax.set_xlabel("Steps k")
        ax.set_ylim(0, 105)
    axes[0].set_ylabel("Rate (%, Wilson 95% CI)")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def drift_plot(profiles: Sequence[Any], path: str | Path, title: str = "Hidden-state drift against depth") -> Path:
    """Relative norm ‖h_c − h_o‖/‖h_o‖ (top) and cosine similarity (bottom) of each decoder layer's
    output, one colour per profile (sensitivity.activations.DriftProfile: uniform, selective);
    solid at answer-predicting tokens, dashed over all tokens; protected layers shaded."""
    if not profiles:
        raise ValueError("no drift profiles to plot")
    fig = Figure(figsize=(9, 6))
    top, bottom = fig.subplots(2, 1, sharex=True)
    for i, profile in enumerate(profiles):
        colour = f"C{i}"
        layers = [row.layer for row in profile.layers]
        for ax, answer, every in ((top, "rel_answer", "rel_all"), (bottom, "cos_answer", "cos_all")):
            ax.plot(layers, [getattr(r, answer) for r in profile.layers], "o-", ms=3, color=colour,
                    label=f"{profile.label}, answer tokens")
            ax.plot(layers, [getattr(r, every) for r in profile.layers], "--", color=colour, alpha=0.7,
                    label=f"{profile.label}, all tokens")
        for layer in profile.protected:
            for ax in (top, bottom):
                ax.axvspan(layer - 0.5, layer + 0.5, color=GROUP_COLOURS["critical"], zorder=0)
    top.set_ylabel("‖h_c − h_o‖ / ‖h_o‖")
    bottom.set_ylabel("cosine(h_o, h_c)")
    bottom.set_xlabel("Decoder layer (output of)")
    top.legend(fontsize=8)
    top.set_title(f"{title} (N = {profiles[0].n_samples}; shaded: protected in the selective model)")
    return _save(fig, path)


def tuning_plot(losses: Sequence[float], rows: Sequence[Any], path: str | Path,
                title: str = "Recovery tuning") -> Path:
    """Training KL per Adam step (each on its own batch of calibration windows, so it is noisy) with
    its running mean, against the calibration KL of the source store (before) and of the tuned store
    as read back from disk (after), and the held-out KL before and after when it was measured.

    rows: the tune job's (original, compressed, tuned) rows (`calib_kl`, `heldout_kl`)."""
    if not losses:
        raise ValueError("no training steps to plot")
    _, before, after = rows
    steps = range(1, len(losses) + 1)
    window = max(1, len(losses) // 8)
    running = [sum(losses[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(losses))]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(steps, losses, ".", color="#9ab", label="training KL (one batch)")
    ax.plot(steps, running, "-", color="#357", label=f"running mean of {window}")
    ax.axhline(before.calib_kl, color="#c33", ls="--", label=f"calibration KL before {before.calib_kl:.4f}")
    ax.axhline(after.calib_kl, color="#393", ls="--", label=f"calibration KL after {after.calib_kl:.4f}")
    if before.heldout_kl is not None and after.heldout_kl is not None:
        ax.axhline(before.heldout_kl, color="#c33", ls=":", label=f"held-out KL before {before.heldout_kl:.4f}")
        ax.axhline(after.heldout_kl, color="#393", ls=":", label=f"held-out KL after {after.heldout_kl:.4f}")
    ax.set_xlabel("Adam step")
    ax.set_ylabel("KL(P_original || P) nats/token")
    ax.legend(fontsize=7)
    ax.set_title(title)
    return _save(fig, path)


def coherence_plot(reports: Mapping[str, Any], path: str | Path, title: str = "Coherence check") -> Path:
    """Three panels (perplexity ratio under the original, log scale; repeated n-gram increase; script
    increase): one bar per model, red when that measure crosses its threshold (dashed line).

    reports: name -> artifacts.coherence.CoherenceReport."""
    if not reports:
        raise ValueError("no coherence reports to plot")
    config = next(iter(reports.values())).config
    panels = (("ppl_ratio", "perplexity ratio (log)", config.max_ppl_ratio),
              ("repetition_increase", f"repeated {config.ngram}-gram ratio, increase", config.max_repetition_increase),
              ("script_increase", "letters outside the script, increase", config.max_script_increase))
    names = list(reports)
    fig = Figure(figsize=(4 + 1.1 * len(names), 3.8))
    axes = fig.subplots(1, 3)
    for ax, (attr, label, threshold) in zip(axes, panels):
        values = [getattr(reports[n], attr) for n in names]
        ax.bar(range(len(names)), values, color=["#c33" if v > threshold else "#357" for v in values])
        ax.axhline(threshold, color="#888", ls="--", lw=1, label=f"flag > {threshold:g}")
        if attr == "ppl_ratio":
            ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_title(label, fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def bits_map_plot(maps: Mapping[str, Mapping[tuple[int, str], float]], path: str | Path,
                  title: str = "Bits per module") -> Path:
    """One panel per plan: module types (rows, MODULE_NAMES order) × layers (columns), coloured by the
    module's Q bits, the value written in each cell. maps: plan label -> {(layer, module): bits}."""
    from calderalab.core import MODULE_NAMES

    if not maps:
        raise ValueError("no plans to plot")
    n_layers = 1 + max(layer for m in maps.values() for layer, _ in m)
    fig = Figure(figsize=(2 + 0.32 * n_layers, 0.6 + 2.3 * len(maps)))
    axes = fig.subplots(len(maps), 1, squeeze=False)[:, 0]
    lo = min(v for m in maps.values() for v in m.values())
    hi = max(v for m in maps.values() for v in m.values())
    for ax, (label, bits) in zip(axes, maps.items()):
        grid = [[bits.get((layer, name), float("nan")) for layer in range(n_layers)] for name in MODULE_NAMES]
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=lo, vmax=hi)
        for r, row in enumerate(grid):
            for c, value in enumerate(row):
                if value == value:  # not NaN
                    ax.text(c, r, f"{value:g}", ha="center", va="center", fontsize=6,
                            color="white" if value < (lo + hi) / 2 else "black")
        ax.set_yticks(range(len(MODULE_NAMES)), MODULE_NAMES, fontsize=7)
        ax.set_xticks(range(n_layers), [str(i) for i in range(n_layers)], fontsize=6)
        ax.set_title(label, fontsize=8)
        fig.colorbar(image, ax=ax, label="bits of Q", fraction=0.02, pad=0.01)
    axes[-1].set_xlabel("layer")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
