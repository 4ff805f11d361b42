"""What `calderalab eval`, `compare` and `runs` print, built from runs (in memory or stored). No torch.

Each view is a list of blocks: ("text", Markdown) or ("note", a caution the terminal highlights),
in print order, so that the commands only print and every line here is testable without a CLI.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

Block = tuple[str, str]  # ("text" | "note", content)
LADDER_PLOT = Path("reports/eval/ladder.png")  # where `calderalab eval --ladder` draws rates against k
PER_TEST_ROWS = 40  # a per-test grid is readable up to a few dozen rows; beyond that, summarise per family


def eval_view(outcomes: Any, suite: str, seeds: Sequence[int], title: str, plot: str | Path | None = None) -> list[Block]:
    """One evaluated run: the validity sentence first, then the tables (and the ladder's plot)."""
    from calderalab.eval.stats import adequacy
    from calderalab.report.tables import family_table, goodhart_table, per_test_grid, seed_table
    from calderalab.report.validity_tables import (letter_share_table, ladder_plot_file, ladder_table,
                                                   validity_preamble, validity_table)

    blocks: list[Block] = [("text", validity_preamble(outcomes) + "\n")]
    if suite == "ladder":
        blocks.append(("text", ladder_table([outcomes])))
        path = ladder_plot_file([outcomes], plot or LADDER_PLOT, title=f"{title}: rates against steps")
        blocks.append(("text", f"\nplot: {path}"))
    blocks += [("text", "\n" + goodhart_table([outcomes], note=False)), ("text", "\n" + validity_table([outcomes])),
               ("text", "\n" + letter_share_table([outcomes]))]
    if len(seeds) > 1:
        blocks.append(("text", "\n" + seed_table([outcomes])))
    grid = per_test_grid([outcomes]) if outcomes.n <= PER_TEST_ROWS else family_table(outcomes)
    blocks.append(("text", "\n" + grid))
    note = adequacy(outcomes.n)
    return blocks + ([("note", note)] if note else [])


def compare_view(db_path: str | Path, run_a: str, runs_b: Sequence[str], **comparison: Any) -> list[Block]:
    """Stored runs B against run A on their common instances (McNemar, bootstrap CIs, Holm), with a note
    for every difference that makes the pairing less than clean. `comparison`: comparison_table's
    keyword arguments (n_boot, seed)."""
    from calderalab.report.tables import comparison_table, goodhart_table, per_test_grid, seed_table
    from calderalab.results import ResultsDB
    from calderalab.run_record import comparability_notes

    notes: list[str] = []
    with ResultsDB(db_path) as store:
        stored_a = store.get_run(run_a)
        a = store.run_outcomes(stored_a.run_id)
        a = dataclasses.replace(a, label=f"{a.label} (#{stored_a.run_id})")
        others = []
        for ref in runs_b:
            stored_b = store.get_run(ref)
            b = store.run_outcomes(stored_b.run_id)
            others.append(dataclasses.replace(b, label=f"{b.label} (#{stored_b.run_id})"))
            common = len(set(a.by_uid()) & set(b.by_uid()))
            if common != a.n or common != b.n:
                notes.append(f"runs {stored_a.run_id} and {stored_b.run_id} are compared on their {common} common instances")
            notes += comparability_notes(stored_a, stored_b)
    blocks: list[Block] = [("text", goodhart_table([a, *others], note=False))]
    if all(len(r.seeds()) > 1 for r in (a, *others)):
        blocks.append(("text", "\n" + seed_table([a, *others])))
    blocks.append(("text", "\n" + comparison_table(a, others, **comparison)))
    blocks += [("note", line) for line in notes]
    if a.n <= PER_TEST_ROWS:
        blocks.append(("text", "\n" + per_test_grid([a, *others])))
    return blocks


def runs_view(db_path: str | Path, experiment: str | None = None) -> list[Block]:
    """The runs stored in the results database as a Markdown table (a note when there are none)."""
    from calderalab.report.tables import markdown_table
    from calderalab.results import ResultsDB

    rows = []
    with ResultsDB(db_path) as store:
        for r in store.list_runs(experiment):
            o = store.run_outcomes(r.run_id)
            und = f"{o.n_understood}/{o.n_probed}" if o.n_probed else "–"
            rows.append([str(r.run_id), r.created_at[:19], r.display_label, r.record.model_ref,
                         r.record.protected_label, r.record.suite, str(r.n_instances),
                         ",".join(map(str, r.record.seeds)), r.record.scoring, f"{o.n_executed}/{o.n}", und,
                         r.record.experiment or "-"])
    if not rows:
        return [("text", f"no runs in {db_path} yet; run `calderalab eval` first")]
    header = ["id", "time (UTC)", "label", "model", "protected", "suite", "N", "seeds", "scoring", "exec", "und",
              "experiment"]
    return [("text", markdown_table(header, rows))]
