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
    zone_source: str  # "profile" or "depth fallback"
    ultra_ranks: dict[int, int]
    timings: dict[str, float]
    summary: str  # the one-screen Markdown summary


def profile_layers(session: Session, plan: Any, config: StudyConfig) -> Any:
    """The per-layer sensitivity profile of `plan`'s spec, one layer swapped in at a time from the
    stored artifacts; reuses <out>/profile.json when it was made with the same settings."""
    from calderalab.artifacts import assemble_weights
    from calderalab.models import swapped_weights
    from calderalab.sensitivity.measure import SensitivityConfig, greedy_reference_samples, layer_sensitivity
    from calderalab.sensitivity.pipeline import probe_prompt_ids
    from calderalab.sensitivity.profile import SensitivityProfile

    s = config.sensitivity
    settings = {"model": config.run.model, "spec": plan.spec(0, "q").to_dict(), "spec_key": plan.spec(0, "q").key(),
                "threshold": s.threshold, "seed": config.compress.seed, "plan_hash": plan.hash()}
    path = Path(config.run.out) / "profile.json"
    if path.exists():
        stored = SensitivityProfile.load(path)
        if all(stored.settings.get(k) == v for k, v in settings.items()) and stored.settings.get("n_samples") == s.n_samples:
            log.info("reusing the sensitivity profile in %s", path)
            return stored
    started = time.perf_counter()
    measure = SensitivityConfig(batch_size=s.batch_size, noise_batch_size=1, max_new_tokens=s.max_new_tokens,
                                pad_token_id=int(session.tokenizer.pad_token_id or 0))
    prompts = probe_prompt_ids(session.tokenizer, s.n_samples, config.compress.seed)
    session._tick("sensitivity: reference answers", 0, 1)
    samples = greedy_reference_samples(session.model, prompts, measure, getattr(session.tokenizer, "eos_token_id", None))
    session._tick("sensitivity: reference answers", 1, 1)
    profile = layer_sensitivity(
        session.model, samples, lambda l: assemble_weights(session.store, session.model, layers=[l], plan=plan),
        session.n_layers, None, measure, swap=swapped_weights,
        progress=lambda done, total: session._tick("sensitivity", done, total), settings=settings,
    )
    session.timed("sensitivity", time.perf_counter() - started)
    profile.save(path)
    return profile


def choose_zone(profile: Any, threshold: float) -> tuple[tuple[int, ...], str]:
    """The critical zone from the profile (source "profile"), or — when no late run falls below the
    threshold — the critical group by depth (LayerGroups, source "depth fallback"). The fallback
    is a control so that selective/ultra still have layers to protect, not a finding: the report
    says so in its headline and never labels those layers as critical."""
    from calderalab.sensitivity.profile import LayerGroups, critical_zone

    zone = critical_zone(profile, threshold)
    if zone:
        return zone, "profile"
    return tuple(LayerGroups().ranges(profile.n_layers)["critical"]), "depth fallback"


def study(config: StudyConfig = StudyConfig(), evaluator: Evaluator = default_evaluator, progress: Progress | None = None,
          model_and_tokenizer: tuple[Any, Any] | None = None) -> StudyResult:
    """Run the whole study and write its report folder (see module docstring)."""
    from calderalab.allocation import ultra_ranks
    from calderalab.models import discover_layers
    from calderalab.plans import selective_plan, ultra_plan, uniform_plan
    from calderalab.run_record import format_layers

    session = Session.open(config.run, config.compress, config.eval, "study", evaluator, progress, model_and_tokenizer)
    n = session.n_layers
    spec = config.compress.spec()
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
        max_rank = min(min(m.weight.shape) for t in discover_layers(session.model) for m in t.modules.values())
        ranks = ultra_ranks(profile, spec.rank, zone, max_rank=max_rank)
        ultra = ultra_plan(n, spec, ranks)
        session.compress(ultra, stage="compress ultra (zone layers)")
        configs.append((f"{spec.bits}-bit ultra", ultra, zone, str(spec.bits)))
    runs = evaluate_configs(session, configs)
    sections = _sections(profile, zone, zone_source, spec.rank, ranks, runs, config)
    plot = _fidelity_plot(profile, zone if zone_source == "profile" else (), Path(config.run.out))
    result = ExperimentResult("study", runs, sections, {"fidelity (U-shape)": plot},
                              data={"zone": list(zone), "zone_source": zone_source, "ultra_ranks": ranks,
                                    "critical_zone": format_layers(zone)})
    summary = study_summary(runs, zone, zone_source, session.timings)
    paths = finish(session, result, config.to_dict(), title=f"Layer sensitivity and Goodhart Gap study: {config.run.model}")
    return StudyResult(result, paths, zone, zone_source, ranks, dict(session.timings), summary)


def _fidelity_plot(profile: Any, zone: tuple[int, ...], out: Path) -> Path:
    from calderalab.report.plots import fidelity_plot

    return fidelity_plot(profile, out / "fidelity.png", zone)


def _sections(profile: Any, zone: tuple[int, ...], zone_source: str, base_rank: int, ranks: dict[int, int],
              runs: dict[str, list[Any]], config: StudyConfig) -> list[Any]:
    from calderalab.report.experiment_report import Section, suite_sections
    from calderalab.report.sensitivity_tables import critical_table, group_table, noise_line, ultra_table, zone_contrast

    measured = zone_source == "profile"
    out = [Section("Critical zone", zone_headline(profile, zone, measured, config.sensitivity.threshold)),
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


def zone_headline(profile: Any, zone: tuple[int, ...], measured: bool, threshold: float) -> str:
    """The report's first lines: the measured zone and how it stands against the rest, or plainly
    that there is none and the protected set is a control."""
    from calderalab.report.sensitivity_tables import zone_contrast

    layers = ", ".join(map(str, zone))
    if not measured:
        return (f"**No critical zone was found**: no late run of layers fell below fidelity {threshold:.0%}. The "
                f"selective and ultra configurations protect layers {layers} **by depth, not by measurement**: a "
                "control, not a finding of the profile.")
    if len(zone) == len(profile.layers):
        return (f"**Every measured layer fell below fidelity {threshold:.0%}**: the threshold is too high for this "
                "spec (or the model is fragile everywhere), so no zone stands out and selective protects the whole "
                "model, which equals the baseline.")
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
