"""Experiment report folders: Markdown sections in the research report's shapes, and manifest.json.

Pure strings and files; no torch. Tables come from `report.tables` (Goodhart table, per-test
grid, paired comparison, bitwidth and seed tables), sensitivity tables from
`report.sensitivity_tables`; this module only arranges them into a report and records the
provenance (resolved config, git sha, seed, package versions) beside it.
"""

from __future__ import annotations

import json
import re
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

from calderalab.eval.outcomes import RunOutcomes
from calderalab.report import tables
from calderalab.report.validity_tables import (ladder_plot_file, ladder_table, letter_share_table, validity_preamble,
                                               validity_table)


@dataclass(frozen=True)
class Section:
    """One titled part of a report: a heading and its Markdown body."""

    title: str
    body: str

    def render(self, level: int = 2) -> str:
        return f"{'#' * level} {self.title}\n\n{self.body.rstrip()}\n"


def goodhart_sections(runs: Sequence[RunOutcomes], scoring_note: str, *, baseline: int = 0,
                      n_boot: int = 2000) -> list[Section]:
    """The validity sentence and the Config | Protected | Understanding | Execution | Gaps table, chance
    and surface floors, letter shares, per-test grid and the paired McNemar comparison of every
    configuration against the baseline (row `baseline`)."""
    if not runs:
        raise ValueError("no runs to report")
    reference = runs[baseline]
    # The validity sentence comes before any gap figure: a gap between probes at chance is no finding.
    preamble = validity_preamble(reference)
    out = [Section(f"Goodhart Gap ({scoring_note})", f"{preamble}\n\n{tables.goodhart_table(runs)}"),
           Section(f"Chance and surface floors ({scoring_note})", validity_table(runs))]
    if any(o.understanding_detail is not None and o.understanding_detail.mode in ("letters", "generated")
           for o in reference.outcomes):
        out.append(Section(f"Letter shares, raw and debiased ({scoring_note})", letter_share_table(runs)))
    out.append(Section(f"Per-test breakdown ({scoring_note})", tables.per_test_grid(runs)))
    others = [r for i, r in enumerate(runs) if i != baseline]
    if others:
        out.append(Section(f"Paired comparison against {runs[baseline].label} ({scoring_note})",
                           tables.comparison_table(runs[baseline], others, n_boot=n_boot)))
    if len({o.seed for r in runs for o in r.outcomes}) > 1:
        out.append(Section(f"Over instance seeds ({scoring_note})", tables.seed_table(runs)))
    return out


LADDER_NOTE = "ladder"  # suite notes that start with this hold ladder runs (rates against k)


def ladder_sections(runs: Sequence[RunOutcomes], scoring_note: str, plot_path: str | Path) -> list[Section]:
    """The difficulty ladder: the validity sentence, rates against the number of steps k for every
    configuration (with chance and p), the plot, and chance/surface floors over the whole ladder."""
    if not runs:
        raise ValueError("no runs to report")
    plot = ladder_plot_file(runs, plot_path, title=f"Rates against the number of steps ({scoring_note})")
    body = (f"{validity_preamble(runs[0])}\n\n{ladder_table(runs)}\n\n![ladder]({Path(plot).name})\n\n"
            f"{validity_table(runs)}")
    return [Section(f"Difficulty ladder ({scoring_note})", body)]


def suite_sections(runs: Sequence[RunOutcomes], scoring_note: str, out_dir: str | Path) -> list[Section]:
    """Ladder sections for a ladder suite, Goodhart sections for the others."""
    if scoring_note.startswith(LADDER_NOTE):
        slug = re.sub(r"[^A-Za-z0-9]+", "_", scoring_note).strip("_")
        return ladder_sections(runs, scoring_note, Path(out_dir) / f"{slug}.png")
    return goodhart_sections(runs, scoring_note)


def timings_table(timings: Mapping[str, float]) -> str:
    rows = [[stage, f"{seconds:.1f}"] for stage, seconds in timings.items()]
    rows.append(["**total**", f"{sum(timings.values()):.1f}"])
    return tables.markdown_table(["Stage", "Seconds"], rows)


def versions() -> dict[str, str | None]:
    """Versions of the packages a result depends on (None when not installed)."""
    from calderalab import __version__

    out: dict[str, str | None] = {"python": platform.python_version(), "calderalab": __version__}
    for name in ("torch", "transformers", "numpy", "scipy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_report(out_dir: str | Path, title: str, sections: Sequence[Section], manifest: Mapping[str, Any],
                 preamble: str = "", filename: str = "report.md") -> dict[str, Path]:
    """Write <out>/<filename> and <out>/manifest.json (atomically, via a temp file and rename)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = f"# {title}\n\n" + (preamble.rstrip() + "\n\n" if preamble else "") + "\n".join(s.render() for s in sections)
    paths = {"report": out / filename, "manifest": out / "manifest.json"}
    full_manifest = {**manifest, "versions": versions(), "report": filename}
    for path, content in ((paths["report"], text), (paths["manifest"], json.dumps(full_manifest, indent=2, sort_keys=True, default=str))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(content)
        tmp.replace(path)
    return paths
