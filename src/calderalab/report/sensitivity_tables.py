"""Markdown tables of a sensitivity profile, in the report's own shapes. No torch.

- layer-group table: Layer Group | Layers | Avg Fidelity | Avg Margin | Interpretation
- critical-layer details: Layer | Fidelity | Margin | Notes
- ultra rank table: Layer | Uniform Rank | Ultra Rank | Rank Increase

Every label and note is derived from the measured numbers and their noise, never from the
research report's wording: a difference counts only when it exceeds `noise_band`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from calderalab.sensitivity.noise import fidelity_error, fidelity_gap, noise_band
from calderalab.sensitivity.profile import GroupSummary, LayerGroups, SensitivityProfile, group_summaries

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


def _points(x: float) -> str:
    """A fidelity difference in percentage points, in fmt_pct's style: '12 points', '4.4 points'."""
    return fmt_pct(x)[:-1] + " points"


# ---------------------------------------------------------------- layer groups


def _range_text(values: Sequence[float]) -> str:
    """'48–60%' (or '52%' when all equal at the shown precision)."""
    lo, hi = fmt_pct(min(values)), fmt_pct(max(values))
    return lo if lo == hi else f"{lo[:-1]}–{hi}"


def _names(names: Sequence[str]) -> str:
    """'Early', 'Early and Late', 'Early, Middle and Late'."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def group_label(profile: SensitivityProfile, group: GroupSummary, others: Sequence[GroupSummary]) -> str:
    """What the numbers say about one group against the others:
    'most sensitive group (avg fidelity 25% vs 48–60% elsewhere)' only when it is the lowest and
    every other group is above it by more than the noise; 'least sensitive group (...)' likewise;
    'no different from the others (within noise)' when no difference is outside the noise;
    otherwise which groups it is measurably below or above and which it is within noise of."""
    if not others:
        return "the only measured group"
    gap = {o.name: fidelity_gap(profile, group.layers, o.layers) for o in others}  # > 0: o has higher fidelity
    higher = [o.name.capitalize() for o in others if gap[o.name] > 0]
    lower = [o.name.capitalize() for o in others if gap[o.name] < 0]
    same = [o.name.capitalize() for o in others if gap[o.name] == 0]
    contrast = f"(avg fidelity {fmt_pct(group.avg_fidelity)} vs {_range_text([o.avg_fidelity for o in others])} elsewhere)"
    if not higher and not lower:
        return "no different from the others (within noise)"
    if len(higher) == len(others):
        return f"most sensitive group {contrast}"
    if len(lower) == len(others):
        return f"least sensitive group {contrast}"
    parts = [f"lower fidelity than {_names(higher)}"] if higher else []
    parts += [f"higher than {_names(lower)}"] if lower else []
    parts += [f"within noise of {_names(same)}"] if same else []
    return "; ".join(parts)


def group_table(profile: SensitivityProfile, groups: LayerGroups = LayerGroups()) -> str:
    """The report's 'Layer Fidelity Profile' table; averages over each group's measured layers, and
    an interpretation measured against the other groups and the noise (`group_label`)."""
    summaries = group_summaries(profile, groups)
    rows = [
        [f"**{g.name.capitalize()}**", _span(g.span), fmt_pct(g.avg_fidelity), f"{g.avg_margin:+.3f}",
         group_label(profile, g, [o for o in summaries if o is not g])]
        for g in summaries
    ]
    return _table(["Layer Group", "Layers", "Avg Fidelity", "Avg Margin", "Interpretation"], rows)


# ---------------------------------------------------------------- critical layers


def _lowest_note(profile: SensitivityProfile, layers: Sequence[int], noun: str) -> dict[int, str]:
    """{layer: 'lowest fidelity in the zone[, within noise of layers …]'}, or {} on a tie or when
    the lowest is within noise of all the others."""
    fid = {l: profile.row(l).metrics.fidelity for l in layers}
    worst = min(layers, key=lambda l: (fid[l], -l))
    if len(layers) < 2 or any(fid[l] == fid[worst] for l in layers if l != worst):
        return {}  # one layer, or a tie: no layer is 'the' lowest
    close = [l for l in layers if l != worst and not fidelity_gap(profile, [worst], [l])]
    if close and len(close) == len(layers) - 1:
        return {}  # within noise of every other layer: being lowest is not a measured fact
    within = f", within noise of layer{'s' if len(close) > 1 else ''} {_names([str(l) for l in close])}" if close else ""
    return {worst: f"lowest fidelity in the {noun}{within}"}


def _change_note(profile: SensitivityProfile, layer: int) -> str | None:
    """'fidelity fell 12 points from layer 24' when the change from the previous layer is outside the noise."""
    prev = layer - 1
    if prev not in profile.layers:
        return None
    change = fidelity_gap(profile, [prev], [layer])
    if change == 0.0:
        return None
    return f"fidelity {'fell' if change < 0 else 'rose'} {_points(abs(change))} from layer {prev}"


def _near_complete_note(profile: SensitivityProfile, layer: int) -> str | None:
    m = profile.row(layer).metrics
    if m.fidelity >= NEAR_COMPLETE:
        return None
    if m.n_samples:
        return f"{round(m.fidelity * m.n_samples)} of {m.n_samples} answers unchanged"
    return f"fewer than {100 * NEAR_COMPLETE:g}% of answers unchanged"


def zone_notes(profile: SensitivityProfile, zone: Sequence[int], noun: str = "zone") -> dict[int, str]:
    """Measured facts per layer, joined by '; ' (a layer with none gets ''): the lowest fidelity in
    the zone (unless tied), a rise or fall from the previous layer outside the noise, and how many
    answers survived when fidelity is below NEAR_COMPLETE."""
    lowest = _lowest_note(profile, zone, noun)
    notes = {}
    for layer in zone:
        facts = [lowest.get(layer), _change_note(profile, layer), _near_complete_note(profile, layer)]
        notes[layer] = "; ".join(f for f in facts if f)
    return notes


def critical_table(profile: SensitivityProfile, zone: Sequence[int], noun: str = "zone") -> str:
    """The report's 'Critical Layer Details' table; `noun` names the set in the notes (e.g. 'set'
    for layers protected by depth rather than found by measurement)."""
    if not zone:
        return "No critical zone: no late run of layers falls below the fidelity threshold.\n"
    notes = zone_notes(profile, zone, noun)
    rows = [
        [str(l), fmt_pct(profile.row(l).metrics.fidelity, 1), f"{profile.row(l).metrics.margin:+.3f}", notes[l]] for l in zone
    ]
    return _table(["Layer", "Fidelity", "Margin", "Notes"], rows)


def zone_contrast(profile: SensitivityProfile, zone: Sequence[int]) -> str:
    """'avg fidelity 4.4% in these layers vs 52% over the other measured layers (outside the noise)'."""
    rest = [l for l in profile.layers if l not in zone]
    inside = sum(profile.row(l).metrics.fidelity for l in zone) / len(zone)
    if not rest:
        return f"avg fidelity {fmt_pct(inside)}; no other layer was measured"
    outside = sum(profile.row(l).metrics.fidelity for l in rest) / len(rest)
    verdict = "outside the noise" if fidelity_gap(profile, zone, rest) else "within the noise: not a measured difference"
    return f"avg fidelity {fmt_pct(inside)} in these layers vs {fmt_pct(outside)} over the other measured layers ({verdict})"


def ultra_table(base_rank: int, ranks: Mapping[int, int]) -> str:
    """The report's ultra rank table: Layer | Uniform Rank | Ultra Rank | Rank Increase (8x, 2.5x)."""
    rows = [[str(l), str(base_rank), str(r), f"{r / base_rank:g}x"] for l, r in sorted(ranks.items())]
    return _table(["Layer", "Uniform Rank", "Ultra Rank", "Rank Increase"], rows)


def noise_line(profile: SensitivityProfile) -> str:
    """The noise floor, the sample count and the rule that decides 'outside the noise'."""
    n = profile.noise
    kl = "n/a" if n.kl is None else f"{n.kl:.2e}"
    n_samples = profile.settings.get("n_samples", n.n_samples)
    rule = ("A fidelity difference counts as measured only when it exceeds the noise floor's fidelity loss plus "
            "the 95% sampling error of both sides (Wilson, N samples each)" if n_samples else
            "Sample count unknown: differences are compared with the noise floor only")
    return (
        f"Noise floor (uncompressed vs itself, other batch layout): fidelity {fmt_pct(n.fidelity, 1)}, "
        f"margin {n.margin:+.4f}, KL {kl}; N = {n_samples} samples. {rule}.\n"
    )
