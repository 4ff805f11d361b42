"""The `calderalab activations` output folder: drift.json, drift.md (one row per layer) and drift.png.
Reads drift profiles (sensitivity.activations.DriftProfile); never measures them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence


def drift_table(profiles: Sequence[Any]) -> str:
    """Markdown: per layer, each profile's relative norm and cosine at answer tokens and over all tokens."""
    if not profiles:
        raise ValueError("no drift profiles to tabulate")
    head = ["layer"]
    for p in profiles:
        head += [f"{p.label} rel (answer)", f"{p.label} rel (all)", f"{p.label} cos (answer)", f"{p.label} cos (all)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for i, row in enumerate(profiles[0].layers):
        cells = [str(row.layer)]
        for p in profiles:
            r = p.layers[i]
            cells += [f"{r.rel_answer:.4f}", f"{r.rel_all:.4f}", f"{r.cos_answer:.4f}", f"{r.cos_all:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(profiles: Sequence[Any], out_dir: Path, provenance: dict[str, Any]) -> dict[str, Path]:
    """drift.json (profiles + provenance), drift.md and drift.png in `out_dir`; returns their paths by name."""
    from calderalab.report.plots import drift_plot

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "drift.json", "table": out_dir / "drift.md"}
    paths["json"].write_text(json.dumps({"provenance": provenance, "profiles": [p.to_dict() for p in profiles]}, indent=1))
    paths["table"].write_text("# Hidden-state drift per decoder layer\n\n" + drift_table(profiles))
    paths["plot"] = drift_plot(profiles, out_dir / "drift.png")
    return paths
