"""The main job (`calderalab study`): sensitivity profile → critical zone → uniform compression once
(artifacts) → selective (same artifacts, zone protected) and ultra (extra artifacts for the zone
layers only, at the rule's ranks) → Goodhart Gap evaluation of baseline, uniform, selective, ultra
on the same instances (paired) → a report folder with the research report's tables and plots.

The profile reuses the uniform artifacts: layer l's sensitivity swaps in exactly the Ŵ the
uniform plan uses, so profile and evaluation describe the same compressed weights. Everything is
resumable: stored artifacts, a saved profile with the same settings, and stored runs are reused.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calderalab.experiments.config import StudyConfig
from calderalab.experiments.protection import ExperimentResult, evaluate_configs, finish
from calderalab.experiments.evaluation import Evaluator, default_evaluator
from calderalab.experiments.session import Progress, Session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyResult:
    result: ExperimentResult
    paths: dict[str, Path]
    zone: tuple[int, ...]
    zone_source: str  # "profile", "depth fallback", "within noise" or "saturated"
    ultra_ranks: dict[int, int]
    timings: dict[str, float]
    summary: str  # the one-screen Markdown summary


def profile_layers(session: Session, plan: Any, config: StudyConfig) -> Any:
    """The per-layer sensitivity profile of `plan`'s spec through the one sensitivity pipeline, one
    layer swapped in at a time from the stored artifacts; reuses <out>/profile.json when it was made
    with the same settings."""
    from calderalab.sensitivity.pipeline import StoredWeights, run_sensitivity
    from calderalab.sensitivity.profile import SensitivityProfile

    weights = StoredWeights(session.store, plan)
    expected = {"model": config.run.model, **config.sensitivity.record(), **weights.record()}
    path = Path(config.run.out) / "profile.json"
    if path.exists():
        stored = SensitivityProfile.load(path)
        if all(stored.settings.get(k) == v for k, v in expected.items()):
            log.info("reusing the sensitivity profile in %s", path)
            return stored
    started = time.perf_counter()
    run = run_sensitivity(session.model, session.tokenizer, config.sensitivity, weights, model_ref=config.run.model,
                          progress=lambda done, total: session._tick("sensitivity", done, total),
                          stage=lambda name: session._tick(f"sensitivity: {name}", 1, 1))
    session.timed("sensitivity", time.perf_counter() - started)
    run.profile.save(path)
    return run.profile


def choose_zone(profile: Any, threshold: float) -> tuple[tuple[int, ...], str]:
    """The critical zone from the profile (source "profile"), or the critical group by depth
    (LayerGroups) when the profile cannot name one: no late run falls below the threshold (source
    "depth fallback"); a late run does, but its layers keep no fewer answers than the other layers
    beyond the noise (source "within noise": a sampling dip, not a measured zone); or every measured
    layer does (source "saturated": at 2 bits every layer alone can lose every answer, and protecting
    them all would only re-run the baseline). The fallback is a control so that selective/ultra
    still have layers to protect, not a finding: the report says so in its headline and never
    labels those layers as critical."""
    from calderalab.sensitivity.noise import threshold_zone
    from calderalab.sensitivity.profile import LayerGroups, critical_zone

    zone = threshold_zone(profile, threshold)
    if zone and len(zone) < len(profile.layers):
        return zone, "profile"
    source = "saturated" if zone else "within noise" if critical_zone(profile, threshold) else "depth fallback"
    return tuple(LayerGroups().ranges(profile.n_layers)["critical"]), source


def study(config: StudyConfig | None = None, evaluator: Evaluator = default_evaluator, progress: Progress | None = None,
          model_and_tokenizer: tuple[Any, Any] | None = None) -> StudyResult:
    """Run the whole study (None: the default StudyConfig) and write its report folder (see module docstring)."""
    from calderalab.allocation import ultra_ranks
    from calderalab.models import module_shapes
    from calderalab.plans import selective_plan, ultra_plan, uniform_plan
    from calderalab.run_record import format_layers

    config = config or StudyConfig()  # built on call: its compression defaults import torch
    budget = None if config.budget_bpw is None else _budget_settings(config)  # a bad target fails before the model loads
    session = Session.open(config.run, config.compress, config.eval, "study", evaluator, progress, model_and_tokenizer)
    n = session.n_layers
    spec = config.compress.spec()
    if budget is not None:  # an impossible target fails before any compression
        _check_budget_target(session, spec, budget)
    uniform = uniform_plan(n, spec)
    session.compress(uniform, stage="compress uniform")
    profile = profile_layers(session, uniform, config)
    zone, zone_source = choose_zone(profile, config.sensitivity.threshold)
    # Without a measured zone the protected set is a control chosen by depth: its label says so.
    kind = "selective" if zone_source == "profile" else "depth control"
    configs: list[tuple[str, Any, tuple[int, ...], str]] = [
        ("Baseline", None, (), "-"),
        (f"{spec.bits}-bit uniform", uniform, (), str(spec.bits)),
        (f"{spec.bits}-bit {kind}", selective_plan(n, spec, zone), zone, str(spec.bits)),
    ]
    ranks: dict[int, int] = {}
    # Ultra raises the rank of MEASURED critical layers; on a depth-chosen control set it would be a
    # second control that costs a compression and an evaluation, so it runs only with a measured zone.
    if config.ultra and spec.rank > 0 and zone_source == "profile":
        max_rank = min(min(shape) for shape in module_shapes(session.model).values())
        ranks = ultra_ranks(profile, spec.rank, zone, max_rank=max_rank)
        ultra = ultra_plan(n, spec, ranks)
        session.compress(ultra, stage="compress ultra (zone layers)")
        configs.append((f"{spec.bits}-bit ultra", ultra, zone, str(spec.bits)))
    chosen = None if budget is None else _budget_plan(session, profile, budget)
    if chosen is not None:
        configs.append((f"budget {budget.target_bpw:g} bpw", chosen.plan, chosen.plan.protected_layers(), "mixed"))
    runs = evaluate_configs(session, configs)
    sections = _sections(profile, zone, zone_source, spec.rank, ranks, runs, config)
    if chosen is not None:
        sections.insert(4, _budget_section(chosen, budget))
    plot = _fidelity_plot(profile, zone if zone_source == "profile" else (), Path(config.run.out))
    result = ExperimentResult("study", runs, sections, {"fidelity (U-shape)": plot},
                              data={"zone": list(zone), "zone_source": zone_source, "ultra_ranks": ranks,
                                    "critical_zone": format_layers(zone)})
    summary = study_summary(runs, zone, zone_source, session.timings)
    paths = finish(session, result, config.to_dict(), title=f"Layer sensitivity and Goodhart Gap study: {config.run.model}")
    return StudyResult(result, paths, zone, zone_source, ranks, dict(session.timings), summary)


def _budget_settings(config: StudyConfig) -> Any:
    from calderalab.budget import BudgetSettings

    return BudgetSettings(config.budget_bpw)


def _check_budget_target(session: Session, spec: Any, budget: Any) -> None:
    from calderalab.budget import candidate_specs, check_target
    from calderalab.models import module_shapes

    check_target(candidate_specs(spec, budget), budget.target_bpw, module_shapes(session.model))


def _budget_plan(session: Session, profile: Any, budget: Any) -> Any:
    """The budget preset from the study's profile; its candidates are compressed through the session."""
    from calderalab.budget import budget_plan, option_name
    from calderalab.models import module_shapes

    def compress(plan: Any) -> Any:
        return session.compress(plan, stage=f"compress budget candidate {option_name(plan.spec(0, 'q'))}")

    return budget_plan(profile, budget, module_shapes(session.model), compress)


def _budget_section(chosen: Any, budget: Any) -> Any:
    from calderalab.budget import map_table, summary_line
    from calderalab.report.experiment_report import Section

    return Section("Budget plan", summary_line(chosen, budget) + "\n\n" + map_table(chosen) + "\n")


def _fidelity_plot(profile: Any, zone: tuple[int, ...], out: Path) -> Path:
    from calderalab.report.plots import fidelity_plot

    return fidelity_plot(profile, out / "fidelity.png", zone)


def _sections(profile: Any, zone: tuple[int, ...], zone_source: str, base_rank: int, ranks: dict[int, int],
              runs: dict[str, list[Any]], config: StudyConfig) -> list[Any]:
    from calderalab.report.experiment_report import Section, suite_sections
    from calderalab.report.sensitivity_tables import critical_table, group_table, noise_line, ultra_table, zone_contrast

    measured = zone_source == "profile"
    out = [Section("Critical zone", zone_headline(profile, zone, zone_source, config.sensitivity.threshold)),
           Section("Layer fidelity profile", noise_line(profile) + "\n" + group_table(profile)),
           Section("Fidelity per layer", "![fidelity per layer](fidelity.png)")]
    if measured:
        out.append(Section("Critical layer details", critical_table(profile, zone)))
    else:
        out.append(Section("Protected by depth (control)",
                           "Protected by depth, not by measurement: the last group of layers by depth, shown for "
                           f"comparison. Measured: {zone_contrast(profile, zone)}.\n\n"
                           + critical_table(profile, zone, noun="set")))
    if ranks:
        out.append(Section("Ultra config", ultra_table(base_rank, ranks)))
    elif not measured and config.ultra:
        out.append(Section("Ultra config", "Not run: ultra raises the rank of measured critical layers, and the "
                                           "profile measured none."))
    for note, rs in runs.items():
        out += suite_sections(rs, note, config.run.out)
    return out


def zone_headline(profile: Any, zone: tuple[int, ...], zone_source: str, threshold: float) -> str:
    """The report's first lines: the measured zone and how it stands against the rest, or plainly
    that there is none (or that every layer fell below the threshold) and the protected set is a control."""
    from calderalab.report.sensitivity_tables import zone_contrast
    from calderalab.sensitivity.profile import critical_zone

    layers = ", ".join(map(str, zone))
    control = (f"The selective and ultra configurations protect layers {layers} **by depth, not by measurement**: a "
               "control, not a finding of the profile.")
    if zone_source == "saturated":
        return (f"**Every measured layer fell below fidelity {threshold:.0%}**: at this spec fidelity cannot single out "
                "a zone (the threshold is too high for it), and protecting every layer would only repeat the "
                f"baseline. {control}")
    if zone_source == "within noise":
        below = critical_zone(profile, threshold)
        which = f"layer {below[0]}" if len(below) == 1 else "layers " + ", ".join(map(str, below))
        return (f"**No critical zone was measured**: {which} fell below fidelity {threshold:.0%}, but "
                f"{'it does' if len(below) == 1 else 'they do'} not keep fewer answers than the other layers by more "
                f"than the noise. {control}")
    if zone_source != "profile":
        return f"**No critical zone was found**: no late run of layers fell below fidelity {threshold:.0%}. {control}"
    return (f"**Critical zone (measured): layers {layers}**, each below fidelity {threshold:.0%}; "
            f"{zone_contrast(profile, zone)}.")


def study_summary(runs: dict[str, list[Any]], zone: tuple[int, ...], zone_source: str, timings: dict[str, float]) -> str:
    """One screen: the zone (or that there is none), the validity sentence and the Goodhart table of
    the main suite, the ladder table, stage times."""
    from calderalab.report import tables
    from calderalab.report.experiment_report import LADDER_NOTE, timings_table
    from calderalab.report.validity_tables import ladder_table, validity_preamble

    layers = ", ".join(map(str, zone))
    zone_line = (f"Critical zone (measured): layers {layers}" if zone_source == "profile" else
                 f"No critical zone was measured; layers {layers} are protected by depth as a control")
    parts = [zone_line]
    for note, rs in runs.items():
        table = ladder_table(rs) if note.startswith(LADDER_NOTE) else tables.goodhart_table(rs)
        parts.append(f"### {note}\n\n{validity_preamble(rs[0])}\n\n{table}")
    parts.append(f"### Stage times (s)\n\n{timings_table(timings)}")
    return "\n\n".join(parts) + "\n"
