"""`calderalab report RUN...`: a report folder from runs stored in the results database.

No torch. The first run is the reference (baseline) of every paired comparison. Tables: the
Goodhart table, the per-test grid, McNemar/bootstrap against the first run, a bitwidth table when
the runs span several bit widths; plots: execution vs protected layers (when the runs differ in
protection) and execution vs bits (when they differ in bits).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from calderalab.report.experiment_report import Section, goodhart_sections, write_report


def _n_protected(label: str) -> int | None:
    """Number of layers in a Protected cell ('None' -> 0, '23-27' -> 5, 'All' -> None)."""
    if label == "All":
        return None
    if label in ("None", ""):
        return 0
    total = 0
    for part in label.split(","):
        lo, _, hi = part.partition("-")
        total += int(hi) - int(lo) + 1 if hi else 1
    return total


def report_from_db(db_path: str | Path, run_ids: Sequence[str | int], out_dir: str | Path = "reports/runs") -> dict[str, Path]:
    from calderalab.eval import stats
    from calderalab.report import tables
    from calderalab.report.plots import RatePoint, execution_vs_bits_plot, execution_vs_protected_plot
    from calderalab.results import FOLDER_DB, ResultsDB
    from calderalab.run_record import detect_git_sha

    if not run_ids:
        raise ValueError("name at least one run id (see `calderalab runs`)")
    if not Path(db_path).exists():
        raise FileNotFoundError(f"results database {db_path} does not exist: pass --db (a study writes <out>/{FOLDER_DB})")
    with ResultsDB(db_path) as db:
        stored = [db.get_run(r) for r in run_ids]
        runs = [db.run_outcomes(s.run_id) for s in stored]
    scorings = sorted({s.record.scoring for s in stored})
    note = f"{'/'.join(scorings)} scoring, runs {', '.join(str(s.run_id) for s in stored)}"
    sections = goodhart_sections(runs, note)
    out = Path(out_dir)
    plots: dict[str, Path] = {}
    if len({r.bits for r in runs}) > 1:
        sections.append(Section("Bitwidth comparison", tables.bitwidth_table(runs)))
        series: dict[str, dict[float, list[float]]] = {}
        for r in runs:
            if r.bits not in ("-", "None"):
                per_seed = [r.for_seed(s) for s in r.seeds()] or [r]
                series.setdefault("protected " + r.protected, {})[float(r.bits)] = [x.n_executed / x.n for x in per_seed if x.n]
        if series:
            plots["bits"] = execution_vs_bits_plot(series, out / "execution_vs_bits.png", title="Execution vs bits (b_Q)")
    counts = {r.label: _n_protected(r.protected) for r in runs}
    compressed = [r for r in runs if counts[r.label] is not None]
    if len({counts[r.label] for r in compressed}) > 1:
        base = next((r for r in runs if counts[r.label] is None), None)
        points = []
        for r in compressed:
            iv = stats.wilson_interval(r.n_executed, r.n)
            points.append(RatePoint(counts[r.label], iv.estimate, iv.low, iv.high))
        out.mkdir(parents=True, exist_ok=True)
        plots["protected"] = execution_vs_protected_plot(points, out / "execution_vs_protected.png",
                                                         baseline=None if base is None else base.n_executed / base.n)
    if plots:
        sections.append(Section("Plots", "\n".join(f"![{k}]({p.name})" for k, p in plots.items())))
    manifest = {"runs": [s.run_id for s in stored], "results_db": str(db_path), "git_sha": detect_git_sha(),
                "labels": [s.display_label for s in stored]}
    paths = write_report(out, "Evaluation report", sections, manifest)
    return {**paths, **{f"plot {k}": p for k, p in plots.items()}}
