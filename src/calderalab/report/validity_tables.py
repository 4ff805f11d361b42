"""Tables that say whether a Goodhart measurement means anything: chance, surface floor, letter shares,
and the difficulty ladder (rates against the number of steps). Pure strings; no torch.

- `validity_table`: Config | Probe | Scoring | Rate | Chance | p vs chance | Surface floor | Verdict
- `letter_share_table`: Config | Probe | the share of picks at each letter, raw (rotation 0) and debiased
- `ladder_table`: k | Config | Understanding | Execution, each with its chance and p-value
- `validity_preamble`: the one plain sentence that goes before any gap figure
- `ladder_plot_file`: understanding and execution against k, one line per configuration
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from calderalab.eval.outcomes import RunOutcomes
from calderalab.eval.stats import wilson_interval
from calderalab.eval.validity import MODE_NAMES, ProbeValidity, gap_measurable, informative_sentence, probe_validity
from calderalab.report.plots import LadderSeries, ladder_plot
from calderalab.report.tables import format_p, markdown_table, p_text


def run_validity(run: RunOutcomes) -> tuple[ProbeValidity | None, ProbeValidity | None]:
    """(understanding, execution) validity of one run; None where the run has no such probe details."""
    return probe_validity(run.outcomes, "understanding"), probe_validity(run.outcomes, "execution")


def measurable(run: RunOutcomes) -> bool:
    return gap_measurable(*run_validity(run))


def validity_preamble(reference: RunOutcomes) -> str:
    """The sentence that precedes every gap figure: are the reference model's probes informative?"""
    und, exe = run_validity(reference)
    if und is None and exe is None:
        return f"{reference.label}: no option details were stored with this run, so chance cannot be tested."
    return informative_sentence(reference.label, und, exe)


def chance_cell(v: ProbeValidity | None) -> str:
    """'chance 25%, p=0.43' (one-sided exact test of the rate against chance)."""
    return "–" if v is None else f"chance {v.chance:.0%}, {p_text(v.p_value)}"


def _rate(v: ProbeValidity) -> str:
    iv = wilson_interval(v.correct, v.n)
    return f"{v.correct}/{v.n} ({v.rate:.0%}) [{iv.low * 100:.0f}–{iv.high * 100:.0f}]"


def validity_table(runs: Sequence[RunOutcomes]) -> str:
    """Every probe of every run against chance (exact test) and against the best surface heuristic."""
    rows = []
    for run in runs:
        for v in run_validity(run):
            if v is None:
                continue
            rows.append([run.label, v.probe, MODE_NAMES[v.mode], _rate(v), f"{v.chance:.0%} ({v.chance_rule})",
                         format_p(v.p_value), f"{v.floor:.0%} ({v.floor_rule})", v.verdict()])
    if not rows:
        return "No option details were stored with these runs, so chance and surface floors cannot be computed."
    return markdown_table(["Config", "Probe", "Scoring", "Rate [Wilson 95%]", "Chance", "p vs chance (one-sided)",
                           "Best surface heuristic", "Verdict"], rows)


def _shares(shares: Sequence[float]) -> str:
    return " ".join(f"{'ABCDEFGHIJ'[i]} {s:.0%}" for i, s in enumerate(shares))


def letter_share_table(runs: Sequence[RunOutcomes]) -> str:
    """Where the picks fall, by letter: the raw pick (the order shown, rotation 0) against the debiased
    pick. A raw column piled on one letter is position bias; the debiased column should follow
    where the right options sit (the 'right plans' row)."""
    rows = []
    for run in runs:
        v = probe_validity(run.outcomes, "understanding")
        if v is None or not v.letter_shares:
            continue
        rows.append([run.label, MODE_NAMES[v.mode], _shares(v.raw_letter_shares), _shares(v.letter_shares)])
    if not rows:
        return "No lettered understanding probes in these runs."
    details = [o.understanding_detail for o in runs[0].outcomes if o.understanding_detail is not None]
    width = max(d.n_options for d in details)
    right = [sum(d.correct == j for d in details) / len(details) for j in range(width)]
    rows.append(["(where the right plans sit)", "–", _shares(right), _shares(right)])
    return markdown_table(["Config", "Scoring", "Raw pick (as shown)", "Debiased pick"], rows)


def _by_steps(run: RunOutcomes) -> dict[int, RunOutcomes]:
    groups: dict[int, list] = {}
    for o in run.outcomes:
        if o.n_steps is None:
            raise ValueError(f"run {run.label!r} has outcomes without a step count; it is not a ladder run")
        groups.setdefault(o.n_steps, []).append(o)
    return {k: RunOutcomes(run.label, run.protected, tuple(v), run.bits) for k, v in sorted(groups.items())}


def ladder_rates(run: RunOutcomes) -> dict[int, tuple[ProbeValidity | None, ProbeValidity | None]]:
    """k -> (understanding, execution) validity of the run's k-step instances."""
    return {k: run_validity(sub) for k, sub in _by_steps(run).items()}


def ladder_table(runs: Sequence[RunOutcomes]) -> str:
    """Rates against the number of steps k, one row per (k, configuration), each with chance and p."""
    rows = []
    per_run = [ladder_rates(r) for r in runs]
    steps = sorted({k for rates in per_run for k in rates})
    for k in steps:
        for run, rates in zip(runs, per_run):
            if k not in rates:
                continue
            und, exe = rates[k]
            cells = [f"{_rate(v)}; {chance_cell(v)}" if v else "–" for v in (und, exe)]
            rows.append([str(k), run.label, *cells])
    return markdown_table(["Steps k", "Config", "Understanding; chance, p", "Execution; chance, p"], rows)


def _point(v: ProbeValidity) -> tuple[float, float, float, float]:
    iv = wilson_interval(v.correct, v.n)
    return v.rate, iv.low, iv.high, v.chance


def ladder_series(run: RunOutcomes) -> LadderSeries:
    """A run's ladder rates as a plot series (Wilson intervals, chance per k)."""
    rates = ladder_rates(run)
    return LadderSeries(run.label, {k: _point(u) for k, (u, _) in rates.items() if u is not None},
                        {k: _point(e) for k, (_, e) in rates.items() if e is not None})


def ladder_plot_file(runs: Sequence[RunOutcomes], path: str | Path, title: str = "Rates against the number of steps") -> Path:
    """The ladder plot of these runs (one line per configuration), written to `path`."""
    return ladder_plot([ladder_series(r) for r in runs], path, title)
