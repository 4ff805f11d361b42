"""Markdown tables of evaluation results in the research report's shapes. Pure strings; no torch.

- `goodhart_table`: Config | Protected | Understanding | Execution | Gaps | Gap rate (of understood)
- `per_test_grid`: Test | Expected | one PASS/GAP/FAIL/LUCKY column per configuration
- `family_table`: Family | N | Understanding | Execution | Gaps, one row per task family of one run
- `bitwidth_table`: Bitwidth | Config | Understanding | Execution | Gaps | vs Baseline
- `seed_table`: Config | Seeds | Understanding | Execution | Gap rate, as mean ± std over instance seeds
- `comparison_table`: paired comparison (McNemar, bootstrap CIs, Holm across the table's tests)

Rates are written "6/7 (86%) [49–97]" with a Wilson 95% interval in percent. A table adds a
plain-language note when N is too small for its claims (`eval.stats.adequacy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from calderalab.eval import stats
from calderalab.eval.outcomes import InstanceOutcome, RunOutcomes, align
from calderalab.eval.validity import ProbeValidity, gap_measurable, probe_validity


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; every row must have len(header) cells."""
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {list(row)} has {len(row)} cells, header has {len(header)}")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def rate_cell(k: int, n: int, level: float = 0.95) -> str:
    """'6/7 (86%) [49–97]': count, rate and Wilson interval, all in percent."""
    iv = stats.wilson_interval(k, n, level)
    return f"{k}/{n} ({iv.estimate * 100:.0f}%) [{iv.low * 100:.0f}–{iv.high * 100:.0f}]"


def format_p(p: float) -> str:
    """p-values with three decimals, '<0.001' below that."""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def p_text(p: float) -> str:
    """'p=0.043' or 'p<0.001'."""
    text = format_p(p)
    return f"p{text}" if text.startswith("<") else f"p={text}"


def _validity(run: RunOutcomes) -> tuple[ProbeValidity | None, ProbeValidity | None]:
    return probe_validity(run.outcomes, "understanding"), probe_validity(run.outcomes, "execution")


def _gap_rate_cell(run: RunOutcomes, measurable: bool) -> str:
    # Conditional on understanding, so a model that understands nothing cannot look gap-free.
    if run.n_probed == 0:
        return "– (no probe)"
    if not measurable:
        return "not measurable"
    if run.n_understood == 0:
        return "– (none understood)"
    return rate_cell(run.n_gaps, run.n_understood)


def _with_chance(cell: str, v: ProbeValidity | None) -> str:
    return cell if v is None else f"{cell}; chance {v.chance:.0%}, {p_text(v.p_value)}"


def _understanding_cell(run: RunOutcomes) -> str:
    return rate_cell(run.n_understood, run.n_probed) if run.n_probed else "– (no probe)"


def _gaps_cell(run: RunOutcomes) -> str:
    return f"{run.n_gaps}/{run.n_probed}" if run.n_probed else "–"


def _note(n: int, discordant: int | None = None) -> str:
    msg = stats.adequacy(n, discordant=discordant)
    return f"\n\n> **Note:** {msg}" if msg else ""


def goodhart_table(rows: Sequence[RunOutcomes], *, note: bool = True) -> str:
    """The report's main table, one row per configuration, plus the small-N note.

    Each rate carries its chance level and the one-sided exact p-value against it. The gap rate is
    "not measurable" in every row unless both probes are informative for the FIRST row (the
    baseline): a gap between two probes at chance is no finding.
    """
    if not rows:
        raise ValueError("goodhart_table needs at least one run")
    measurable = gap_measurable(*_validity(rows[0]))
    body = []
    for r in rows:
        und, exe = _validity(r)
        body.append([r.label, r.protected, _with_chance(_understanding_cell(r), und),
                     _with_chance(rate_cell(r.n_executed, r.n), exe), _gaps_cell(r), _gap_rate_cell(r, measurable)])
    header = ["Config", "Protected", "Understanding", "Execution", "Gaps", "Gap rate (of understood)"]
    return markdown_table(header, body) + (_note(min(r.n for r in rows)) if note else "")


def _seed_mean(runs: Sequence[RunOutcomes], rate: Callable[[RunOutcomes], float | None]) -> str:
    values = [v for v in (rate(r) for r in runs) if v is not None]
    return stats.mean_std(values).format() if values else "–"


def seed_table(rows: Sequence[RunOutcomes]) -> str:
    """Per configuration, each rate as mean ± std (ddof=1, in points) over its instance seeds.

    The spread is across seeds (different instance draws), the report's "multiple runs" error bars.
    """
    if not rows:
        raise ValueError("seed_table needs at least one run")
    measurable = gap_measurable(*_validity(rows[0]))  # the same rule as goodhart_table's gap rate
    body = []
    for r in rows:
        per_seed = [r.for_seed(s) for s in r.seeds()]
        if not per_seed:
            raise ValueError(f"run {r.label!r} has no instance seeds recorded")
        gap = (_seed_mean(per_seed, lambda x: x.n_gaps / x.n_understood if x.n_understood else None)
               if measurable else "not measurable")
        body.append([
            r.label, ",".join(str(s) for s in r.seeds()),
            _seed_mean(per_seed, lambda x: x.n_understood / x.n),
            _seed_mean(per_seed, lambda x: x.n_executed / x.n),
            gap,
        ])
    header = ["Config", "Seeds", "Understanding % (mean ± std)", "Execution % (mean ± std)", "Gap rate % (mean ± std)"]
    return markdown_table(header, body)


def verdict_cell(o: InstanceOutcome) -> str:
    """'PASS', or 'GAP (8.7)' / 'FAIL (2:45)' with the wrong parsed answer, 'FAIL (no answer)' if unparsable.

    Without an understanding probe (GSM8K) there is no verdict: 'RIGHT' or 'WRONG (…)'.
    """
    if o.verdict is None:
        v = "RIGHT" if o.executed else "WRONG"
    else:
        v = o.verdict.value
    if o.executed:
        return v
    return f"{v} ({o.executed_parsed})" if o.executed_parsed is not None else f"{v} (no answer)"


def per_test_grid(runs: Sequence[RunOutcomes]) -> str:
    """Test | Expected | one column per run. Tests are the union of instances in first-seen order;
    a test is named by its family when the family appears once, else by its uid."""
    if not runs:
        raise ValueError("per_test_grid needs at least one run")
    order: dict[str, InstanceOutcome] = {}
    for run in runs:
        for o in run.outcomes:
            order.setdefault(o.uid, o)
    per_family: dict[str, int] = {}
    for o in order.values():
        per_family[o.family] = per_family.get(o.family, 0) + 1
    maps = [run.by_uid() for run in runs]
    body = []
    for uid, o in order.items():
        name = o.family if per_family[o.family] == 1 else uid
        body.append([name, o.expected] + [verdict_cell(m[uid]) if uid in m else "–" for m in maps])
    return markdown_table(["Test", "Expected"] + [r.label for r in runs], body)


def family_table(run: RunOutcomes) -> str:
    """Per task family of one run (families in first-seen order): where the gaps are."""
    families: dict[str, list[InstanceOutcome]] = {}
    for o in run.outcomes:
        families.setdefault(o.family, []).append(o)
    body = []
    for fam, outs in families.items():
        sub = RunOutcomes(run.label, run.protected, tuple(outs))
        body.append([fam, str(sub.n), _understanding_cell(sub), rate_cell(sub.n_executed, sub.n), _gaps_cell(sub)])
    return markdown_table(["Family", "N", "Understanding", "Execution", "Gaps"], body)


def _vs_baseline(base: RunOutcomes, run: RunOutcomes) -> str:
    oa, ob = align(base, run)
    if [o.verdict for o in oa] == [o.verdict for o in ob]:
        return "Identical outcomes"
    ex = stats.mcnemar_exact([o.executed for o in oa], [o.executed for o in ob])
    d_exec = (sum(o.executed for o in ob) - sum(o.executed for o in oa)) / len(oa) * 100
    d_gaps = sum(o.gap for o in ob) - sum(o.gap for o in oa)
    return f"exec {d_exec:+.0f} pts (McNemar p={format_p(ex.p_value)}), gaps {d_gaps:+d}"


def bitwidth_table(rows: Sequence[RunOutcomes], *, baseline: int = 0, note: bool = True,
                   bpw: Mapping[str, float] | None = None) -> str:
    """Bitwidth | Config | Understanding | Execution | Gaps | vs Baseline (paired on common instances).

    With `bpw` (config label -> honest bits per weight of its plan, e.g. `PlanBpw.bpw_fp16`) a
    "bpw (honest)" column follows the nominal bit width; configs without one (the baseline) show "-".
    """
    if not rows:
        raise ValueError("bitwidth_table needs at least one run")
    if not 0 <= baseline < len(rows):
        raise ValueError(f"baseline index {baseline} out of range for {len(rows)} rows")
    base = rows[baseline]
    honest = (lambda r: [f"{bpw[r.label]:.3f}" if r.label in bpw else "-"]) if bpw is not None else (lambda r: [])
    body = [
        [r.bits, *honest(r), r.label, _understanding_cell(r), rate_cell(r.n_executed, r.n), _gaps_cell(r),
         "-" if i == baseline else _vs_baseline(base, r)]
        for i, r in enumerate(rows)
    ]
    header = ["Bitwidth", *(["bpw (honest)"] if bpw is not None else []), "Config", "Understanding", "Execution", "Gaps",
              "vs Baseline"]
    return markdown_table(header, body) + (_note(min(r.n for r in rows)) if note else "")


_METRICS: dict[str, Callable[[InstanceOutcome], bool]] = {
    "Understanding": lambda o: bool(o.understood),
    "Execution": lambda o: o.executed,
    "Gap": lambda o: o.gap,
}
_NEEDS_PROBE = {"Understanding", "Gap"}


@dataclass(frozen=True)
class PairedTest:
    """One metric of one paired comparison (B against A) on n common instances."""

    a_label: str
    b_label: str
    metric: str
    n: int
    k_a: int
    k_b: int
    mcnemar: stats.McNemarResult
    diff: stats.Interval
    diff_clustered: stats.Interval | None
    p_holm: float = 1.0


def paired_tests(
    a: RunOutcomes, others: Sequence[RunOutcomes], *, n_boot: int = 10_000, seed: int = 0, level: float = 0.95
) -> list[PairedTest]:
    """Every (B, metric) test against A, with Holm-adjusted p across all of them."""
    tests: list[PairedTest] = []
    for b in others:
        oa_all, ob_all = align(a, b)
        for metric, fn in _METRICS.items():
            pairs = list(zip(oa_all, ob_all))
            if metric in _NEEDS_PROBE:  # only instances both runs probed for understanding
                pairs = [(x, y) for x, y in pairs if x.probed and y.probed]
            if not pairs:
                continue
            oa, ob = [x for x, _ in pairs], [y for _, y in pairs]
            families = [o.family for o in oa]
            xa, xb = [fn(o) for o in oa], [fn(o) for o in ob]
            clustered = None
            # With one instance per family the two-stage bootstrap is the plain one: no extra column.
            if 1 < len(set(families)) < len(families):
                clustered = stats.cluster_bootstrap_diff(xa, xb, families, n_boot=n_boot, seed=seed,
                                                         level=level)
            tests.append(PairedTest(a.label, b.label, metric, len(oa), sum(xa), sum(xb), stats.mcnemar_exact(xa, xb),
                                    stats.paired_bootstrap_diff(xa, xb, n_boot=n_boot, seed=seed, level=level),
                                    clustered))
    adjusted = stats.holm([t.mcnemar.p_value for t in tests])
    return [PairedTest(**{**t.__dict__, "p_holm": p}) for t, p in zip(tests, adjusted)]


def _diff_cell(iv: stats.Interval | None) -> str:
    if iv is None:
        return "–"
    return f"{iv.estimate * 100:+.0f} [{iv.low * 100:+.0f}, {iv.high * 100:+.0f}]"


def comparison_table(
    a: RunOutcomes, b: RunOutcomes | Sequence[RunOutcomes], *, n_boot: int = 10_000, seed: int = 0, note: bool = True
) -> str:
    """Paired comparison of B (one run or several) against A on their common instances.

    Per metric (understanding, execution, gap indicator): both counts, the difference B − A in
    points with a paired bootstrap 95% CI and a family-clustered one, the discordant pairs
    (A only / B only), the exact McNemar p and the Holm-adjusted p across every row.
    """
    others = [b] if isinstance(b, RunOutcomes) else list(b)
    if not others:
        raise ValueError("comparison_table needs at least one run to compare against A")
    tests = paired_tests(a, others, n_boot=n_boot, seed=seed)
    body = [
        [f"{t.b_label} vs {t.a_label}", t.metric, f"{t.k_a}/{t.n}", f"{t.k_b}/{t.n}", _diff_cell(t.diff),
         _diff_cell(t.diff_clustered), f"{t.mcnemar.b}/{t.mcnemar.c}", format_p(t.mcnemar.p_value),
         format_p(t.p_holm)]
        for t in tests
    ]
    header = ["Comparison", "Metric", "A", "B", "Δ pts [95% CI]", "Δ CI (family-clustered)",
              "Discordant (A only/B only)", "McNemar p", f"Holm p ({len(tests)} tests)"]
    table = markdown_table(header, body)
    if not note:
        return table
    execution = [t for t in tests if t.metric == "Execution"]
    worst = min(execution, key=lambda t: t.mcnemar.discordant)
    return table + _note(min(t.n for t in tests), worst.mcnemar.discordant)
