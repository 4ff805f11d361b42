"""Protection experiments on stored artifacts: ablate, sweep, min-protect, grid (report Experiments 1–3
and the bitwidth comparison). Every compression happens once through `Session.compress`; a protected
set is only a plan whose protected layers are skipped when Ŵ is assembled, so no experiment here
recompresses anything that is already stored.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from calderalab.experiments.session import Session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExperimentResult:
    """What an experiment produced: labelled runs per scoring, report sections, plots, extra data."""

    name: str
    runs: dict[str, list[Any]]  # scoring note -> RunOutcomes, baseline first
    sections: list[Any]  # report.experiment_report.Section
    plots: dict[str, Path] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


def _bits_label(spec: Any) -> str:
    return f"{spec.bits}-bit"


def _layers(text: str | Sequence[int], n_layers: int) -> tuple[int, ...]:
    from calderalab.plans import parse_layer_set

    return parse_layer_set(text, n_layers) if isinstance(text, str) else tuple(sorted(set(text)))


def _suites(session: Session) -> list[tuple[str, Any, list[Any]]]:
    """(scoring note, pass settings, instances) of every evaluation pass, main suite first
    (`eval.suite.experiment_passes`)."""
    from calderalab.eval.suite import experiment_passes
    from calderalab.report.experiment_report import LADDER_NOTE

    out = []
    for i, (settings, instances) in enumerate(experiment_passes(session.eval_settings)):
        if i == 0:
            note = f"{settings.scoring} scoring, N={len(instances)}"
        elif settings.suite == "ladder":
            note = f"{LADDER_NOTE}, {settings.scoring} scoring, N={len(instances)}"
        else:
            note = f"generation, canonical {len(instances)}"
        out.append((note, settings, instances))
    return out


def evaluate_configs(session: Session, configs: Sequence[tuple[str, Any, tuple[int, ...], str]]) -> dict[str, list[Any]]:
    """Evaluate (label, plan or None, protected layers shown, bits) on every pass; baseline first."""
    runs: dict[str, list[Any]] = {}
    for note, settings, instances in _suites(session):
        # The stage names the suite too: each suite's progress is its own bar (or its own plain lines).
        runs[note] = [session.evaluate(label, plan, settings, instances, protected, bits, stage=f"evaluate {label} ({note})")
                      for label, plan, protected, bits in configs]
    return runs


def _goodhart(runs: dict[str, list[Any]], out_dir: str | Path) -> list[Any]:
    from calderalab.report.experiment_report import suite_sections

    return [s for note, rs in runs.items() for s in suite_sections(rs, note, out_dir)]


def ablate(session: Session, protect_sets: Sequence[str | Sequence[int]], bits: int | None = None,
           name: str = "ablate") -> ExperimentResult:
    """Baseline, uniform, and uniform with each protection set kept original (Experiments 1–2)."""
    from calderalab.plans import selective_plan, uniform_plan
    from calderalab.run_record import format_layers

    if not protect_sets:
        raise ValueError("ablate needs at least one protection set, e.g. '23,24,25,26,27' or 'last:5'")
    n = session.n_layers
    spec = session.compress_settings.spec(bits)
    uniform = uniform_plan(n, spec)
    session.compress(uniform)  # resumes: nothing is decomposed when the artifacts exist
    configs: list[tuple[str, Any, tuple[int, ...], str]] = [("Baseline", None, (), "-"),
                                                            (f"{_bits_label(spec)} uniform", uniform, (), str(spec.bits))]
    for protect in protect_sets:
        layers = _layers(protect, n)
        configs.append((f"{_bits_label(spec)} protect {format_layers(layers)}", selective_plan(n, spec, layers), layers,
                        str(spec.bits)))
    runs = evaluate_configs(session, configs)
    return ExperimentResult(name, runs, _goodhart(runs, session.run.out), data={"spec": spec.to_dict()})


def sweep(session: Session, protect_sets: Sequence[str], bits: int | None = None) -> ExperimentResult:
    """Ablation over protection sets (e.g. last:10, last:5, last:3, last:1) with the execution vs
    protected-layers plot (the report's 72B sweep table and per-test grid)."""
    from calderalab.eval import stats
    from calderalab.report.plots import RatePoint, execution_vs_protected_plot

    result = ablate(session, protect_sets, bits, name="sweep")
    plots = {}
    for note, rs in result.runs.items():
        base = rs[0]
        points = []
        for run in rs[1:]:
            k = 0 if run.protected in ("None", "") else len(_layers(run.protected, session.n_layers))
            iv = stats.wilson_interval(run.n_executed, run.n)
            points.append(RatePoint(k, iv.estimate, iv.low, iv.high))
        slug = note.split(",")[0].replace(" ", "_")
        plots[note] = execution_vs_protected_plot(points, Path(session.run.out) / f"execution_vs_protected_{slug}.png",
                                                  baseline=base.n_executed / base.n, title=f"Execution vs protected layers ({note})")
    return dataclasses.replace(result, plots=plots)


def min_protect(session: Session, margin: float | None = None, bits: int | None = None) -> ExperimentResult:
    """Smallest protected tail whose execution is non-inferior to the baseline's: the one-sided
    95% upper bound of the paired drop (baseline − protected) is below `margin` (default
    `search.MarginTest`). Binary search (`calderalab.search.min_protect`) on the main suite, with
    every evaluated tail's Wilson interval, exact McNemar p and upper bound against the baseline."""
    from calderalab.plans import selective_plan, uniform_plan
    from calderalab.report.experiment_report import Section
    from calderalab.search import MarginTest, TailResult
    from calderalab.search import min_protect as search

    test = MarginTest() if margin is None else MarginTest(margin=margin)
    n = session.n_layers
    spec = session.compress_settings.spec(bits)
    session.compress(uniform_plan(n, spec))
    note, settings, instances = _suites(session)[0]
    base = session.evaluate("Baseline", None, settings, instances)
    order = [o.uid for o in base.outcomes]
    runs = [base]

    def evaluate_tail(k: int) -> TailResult:
        layers = tuple(range(n - k, n))
        run = session.evaluate(f"{_bits_label(spec)} protect last {k}", selective_plan(n, spec, layers), settings,
                               instances, layers, str(spec.bits))
        runs.append(run)
        by_uid = run.by_uid()
        return TailResult(tuple(by_uid[u].executed for u in order))

    found = search(evaluate_tail, n, [o.executed for o in base.outcomes], test)
    body = min_protect_verdict(found, base.n_executed) + "\n\n" + min_protect_table(found)
    sections = [Section(f"Minimum protection search ({note})", body)] + _goodhart({note: runs}, session.run.out)
    return ExperimentResult("min-protect", {note: runs}, sections, data={
        "k": found.k, "protected": list(found.protected), "boundary_verified": found.boundary_verified,
        "margin": test.margin, "level": test.level, "n": found.n, "needed_n": found.needed_n,
        "upper_bounds": {e.k: e.test.upper for e in found.evaluations}})


def _points(x: float) -> str:
    """A rate difference in percentage points: 0.0512 -> '5.1 points'."""
    return f"{100 * x:.1f} points"


def min_protect_table(found: Any) -> str:
    """One row per evaluated tail: execution, discordant pairs, drop and its upper bound, verdict."""
    from calderalab.report.tables import format_p, markdown_table

    t = found.test
    rows = [[str(e.k), f"{e.n_correct}/{e.n} ({e.rate:.0%}) [{e.ci_low:.0%}–{e.ci_high:.0%}]", f"{e.b}/{e.c}",
             f"{100 * e.test.estimate:+.1f}", f"{100 * e.test.upper:.1f}", format_p(e.mcnemar_p),
             "yes" if e.passes else "no"] for e in found.evaluations]
    return markdown_table(["Protected last k", "Execution [Wilson 95%]", "Discordant (base only/tail only)",
                           "Drop (points)", f"Drop {t.level:.0%} upper bound (points)", "McNemar p",
                           f"Non-inferior (bound < {100 * t.margin:g})"], rows)


def min_protect_verdict(found: Any, baseline_correct: int) -> str:
    """The verdict sentence: margin, the deciding tail's bound, plainly 'none' when no k passes,
    and how many instances this margin needs."""
    t = found.test
    rule = (f"non-inferiority margin {_points(t.margin)} of execution: a tail passes when the one-sided "
            f"{t.level:.0%} upper bound of the paired drop (baseline − protected, Newcombe) is below it")
    d = found.deciding
    if found.k is None:
        every = " (every layer: the baseline's own weights)" if d.protected[:1] == (0,) else ""
        text = (f"**No protected tail passes** the {rule}. Closest: the last {d.k} layer(s){every}, bound "
                f"{_points(d.test.upper)} (drop {_points(d.test.estimate)}). The search cannot name a minimum "
                f"protection at this N.")
    else:
        text = (f"Minimum protection: the last **{found.k}** layer(s) pass the {rule}: bound "
                f"{_points(d.test.upper)} (drop {_points(d.test.estimate)}). Boundary verified (k−1 evaluated and "
                f"fails): {'yes' if found.boundary_verified else 'no'}.")
    text += (f" Baseline {baseline_correct}/{found.n}. {found.n} instances; this margin needs about "
             f"{found.needed_n} (Nam 1997: power {t.power:.0%}, no true drop, discordance "
             f"{found.discordance:.0%} as observed for the last {d.k} layer(s)).")
    if found.monotonicity_violations:
        text += (f" Monotonicity broke at k = {list(found.monotonicity_violations)}: protecting more layers did "
                 "worse, so the search assumption does not hold at this N and the answer is fragile.")
    return text


def check_grid_plans(plans: Sequence[str]) -> list[str]:
    """The grid's plan kinds, each one of uniform, selective."""
    bad = sorted(set(plans) - {"uniform", "selective"})
    if bad or not plans:
        raise ValueError(f"grid plans must be among uniform, selective; got {list(plans)}")
    return list(plans)


def grid_plan(session: Session, b: Any, shapes: Any, profile: Any = None) -> Any:
    """The compressed plan of bit width b, stored: the uniform spec at an integer b; at a fractional b
    the mix of its two neighbours (`calderalab.fractional`), ordered by `profile` when one is given
    (the budget allocator), else by the documented rule."""
    from calderalab import fractional
    from calderalab.plans import uniform_plan

    n = session.n_layers
    if not fractional.is_fractional(b):
        plan = uniform_plan(n, session.compress_settings.spec(int(b)))
    else:
        lo, hi = (session.compress_settings.spec(x) for x in fractional.neighbours(b))
        if profile is None:
            order = fractional.rule_order(n)
        else:
            order = fractional.profile_order(profile, lo, hi, b, shapes, lambda p: session.compress(
                p, stage=f"compress {p.spec(0, 'q').bits}-bit (errors for the {fractional.bits_label(b)}-bit mix)"))
        plan = fractional.mixed_plan(lo, hi, b, shapes, order)
    session.compress(plan, stage=f"compress {fractional.bits_label(b)}-bit")
    return plan


def grid(session: Session, bits: Sequence[Any] = (2, 3, 4), plans: Sequence[str] = ("uniform", "selective"),
         protect: str | None = None, profile: Any = None) -> ExperimentResult:
    """Bits × plans (uniform, selective) against the baseline: bitwidth comparison tables with each
    plan's honest bpw (mean ± std over instance seeds when there are several) and execution vs bpw.
    A fractional bit width is a mixed plan (`grid_plan`); its "uniform" row is that mix, labelled
    "mixed", and its selective row the same mix with the protected layers kept original."""
    from fractions import Fraction

    from calderalab.eval.validity import probe_validity
    from calderalab.fractional import bits_label, is_fractional, with_protected
    from calderalab.models import module_shapes
    from calderalab.plans import plan_bpw
    from calderalab.report import tables
    from calderalab.report.experiment_report import Section
    from calderalab.report.plots import execution_vs_bits_plot
    from calderalab.run_record import format_layers
    from calderalab.sensitivity.profile import LayerGroups

    check_grid_plans(plans)
    n = session.n_layers
    layers = _layers(protect, n) if protect else tuple(LayerGroups().ranges(n)["critical"])
    shapes = module_shapes(session.model)
    configs: list[tuple[str, Any, tuple[int, ...], str]] = [("Baseline", None, (), "-")]
    bpw: dict[str, float] = {}
    kinds: dict[str, str] = {}
    for b in map(Fraction, bits):
        plan = grid_plan(session, b, shapes, profile)
        name = "mixed" if is_fractional(b) else "uniform"
        for kind in plans:
            label = f"{bits_label(b)}-bit {name}" if kind == "uniform" else \
                f"{bits_label(b)}-bit {'mixed ' if is_fractional(b) else ''}selective ({format_layers(layers)})"
            chosen = plan if kind == "uniform" else with_protected(plan, layers)
            configs.append((label, chosen, () if kind == "uniform" else layers, bits_label(b)))
            bpw[label] = plan_bpw(chosen, shapes).bpw_fp16
            kinds[label] = kind
    runs = evaluate_configs(session, configs)
    sections = []
    plots = {}
    for note, rs in runs.items():
        sections.append(Section(f"Bitwidth comparison ({note})", tables.bitwidth_table(rs, bpw=bpw)))
        series: dict[str, dict[float, list[float]]] = {}
        for run in rs[1:]:
            per_seed = [run.for_seed(s) for s in run.seeds()] or [run]
            series.setdefault(kinds[run.label], {})[bpw[run.label]] = [r.n_executed / r.n for r in per_seed if r.n]
        slug = note.split(",")[0].replace(" ", "_")
        validity = probe_validity(rs[0].outcomes, "execution")  # rs[0]: the uncompressed baseline
        plots[note] = execution_vs_bits_plot(series, Path(session.run.out) / f"execution_vs_bits_{slug}.png",
                                             title=f"Execution vs bits per weight ({note})",
                                             baseline=rs[0].n_executed / rs[0].n if rs[0].n else None,
                                             chance=validity.chance if validity is not None else None)
    return ExperimentResult("grid", runs, sections + _goodhart(runs, session.run.out), plots,
                            data={"bpw": bpw, "protect": list(layers), "bits": [bits_label(b) for b in map(Fraction, bits)]})


def run_experiment(config: Any, name: str, job: Callable[[Session], ExperimentResult], extra: dict[str, Any],
                   progress: Any = None) -> tuple[dict[str, Path], ExperimentResult]:
    """Open a session on `config` (a StudyConfig: run, compress and eval settings), run `job` on it and
    write its report folder; returns (paths, result). `extra` joins the settings in manifest.json."""
    session = Session.open(config.run, config.compress, config.eval, name, progress=progress)
    result = job(session)
    return finish(session, result, extra), result


def finish(session: Session, result: ExperimentResult, config: dict[str, Any], title: str | None = None) -> dict[str, Path]:
    """Write the experiment's report.md and manifest.json (the session's settings plus `config`) into
    the session's output folder."""
    from calderalab.report.experiment_report import Section, timings_table, write_report
    from calderalab.run_record import detect_git_sha

    sections = list(result.sections)
    sections += [Section("Plots", "\n".join(f"![{k}]({p.name})" for k, p in result.plots.items()))] if result.plots else []
    sections.append(Section("Stage times", timings_table(session.timings)))
    manifest = {"experiment": result.name, "config": {**session.settings_dict(), **config}, "git_sha": detect_git_sha(), "seed": session.compress_settings.base.seed,
                "model": session.run.model, "artifacts": session.store.url, "results_db": session.run.db_path,
                "timings_s": {k: round(v, 2) for k, v in session.timings.items()}, "data": result.data,
                "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    paths = write_report(session.run.out, title or f"{result.name}: {session.run.model}", sections, manifest)
    return {**paths, **{f"plot {k}": p for k, p in result.plots.items()}}
