"""Markdown tables of a sensitivity profile, in the report's own shapes. No torch.

- layer-group table: Layer Group | Layers | Avg Fidelity | Avg Margin | Interpretation
- critical-layer details: Layer | Fidelity | Margin | Notes
- ultra rank table: Layer | Uniform Rank | Ultra Rank | Rank Increase
"""

from __future__ import annotations

from typing import Mapping, Sequence

from calderalab.sensitivity.profile import GroupName, LayerGroups, SensitivityProfile, group_summaries

INTERPRETATION: dict[GroupName, str] = {
    "early": "Token processing, relatively robust",
    "middle": "Feature extraction, compressible",
    "late": "Reasoning assembly",
    "critical": "Multi-step execution (MUST PROTECT)",
}
NEAR_COMPLETE = 0.02  # fidelity below which a layer's answers are essentially all changed


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("-" * (len(h) + 2) for h in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _span(r: range) -> str:
    return f"{r.start}" if len(r) == 1 else f"{r.start}-{r.stop - 1}"


def fmt_pct(x: float, digits: int | None = None) -> str:
    """82% / 4.5%: whole percent from 10% up, one decimal below (the report's style) unless digits is given."""
    pct = 100 * x
    if digits is None:
        digits = 0 if round(pct, 1) >= 10 else 1
    return f"{pct:.{digits}f}%"


def group_table(
    profile: SensitivityProfile, groups: LayerGroups = LayerGroups(), interpretation: Mapping[str, str] = INTERPRETATION
) -> str:
    """The report's 'Layer Fidelity Profile' table; averages over each group's measured layers."""
    rows = [
        [f"**{g.name.capitalize()}**", _span(g.span), fmt_pct(g.avg_fidelity), f"{g.avg_margin:+.3f}", interpretation.get(g.name, "")]
        for g in group_summaries(profile, groups)
    ]
    return _table(["Layer Group", "Layers", "Avg Fidelity", "Avg Margin", "Interpretation"], rows)


def zone_notes(profile: SensitivityProfile, zone: Sequence[int]) -> dict[int, str]:
    """Notes by rule: the most sensitive layer (lowest fidelity) is 'Most critical'; the first
    layer 'Start of critical zone'; the largest fall in fidelity from the previous zone layer
    'Sharp drop'; fidelity < 2% 'Near-complete degradation'; otherwise 'Very sensitive'."""
    fid = {l: profile.row(l).metrics.fidelity for l in zone}
    worst = min(zone, key=lambda l: (fid[l], -l))
    drops = {b: fid[a] - fid[b] for a, b in zip(zone, zone[1:])}
    sharpest = max(drops, key=lambda l: drops[l]) if drops else None
    notes = {}
    for l in zone:
        if l == worst:
            notes[l] = "**Most critical**"
        elif l == zone[0]:
            notes[l] = "Start of critical zone"
        elif l == sharpest and drops[l] > 0:
            notes[l] = "Sharp drop"
        elif fid[l] < NEAR_COMPLETE:
            notes[l] = "Near-complete degradation"
        else:
            notes[l] = "Very sensitive"
    return notes


def critical_table(profile: SensitivityProfile, zone: Sequence[int]) -> str:
    """The report's 'Critical Layer Details' table."""
    if not zone:
        return "No critical zone: no late run of layers falls below the fidelity threshold.\n"
    notes = zone_notes(profile, zone)
    rows = [
        [str(l), fmt_pct(profile.row(l).metrics.fidelity, 1), f"{profile.row(l).metrics.margin:+.3f}", notes[l]] for l in zone
    ]
    return _table(["Layer", "Fidelity", "Margin", "Notes"], rows)


def ultra_table(base_rank: int, ranks: Mapping[int, int]) -> str:
    """The report's ultra rank table: Layer | Uniform Rank | Ultra Rank | Rank Increase (8x, 2.5x)."""
    rows = [[str(l), str(base_rank), str(r), f"{r / base_rank:g}x"] for l, r in sorted(ranks.items())]
    return _table(["Layer", "Uniform Rank", "Ultra Rank", "Rank Increase"], rows)


def noise_line(profile: SensitivityProfile) -> str:
    """One sentence on the noise floor and sample count, so readers can judge the table."""
    n = profile.noise
    kl = "n/a" if n.kl is None else f"{n.kl:.2e}"
    return (
        f"Noise floor (uncompressed vs itself, other batch layout): fidelity {fmt_pct(n.fidelity, 1)}, "
        f"margin {n.margin:+.4f}, KL {kl}; N = {profile.settings.get('n_samples', n.n_samples)} samples.\n"
    )
