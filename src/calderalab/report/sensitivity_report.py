"""The `calderalab sensitivity` output folder: profile.json, sensitivity.md (group table, critical
table, ultra ranks) and fidelity.png. Reads a profile; never measures one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from calderalab.sensitivity.profile import LayerGroups, SensitivityProfile


def write_outputs(profile: SensitivityProfile, zone: Sequence[int], out_dir: Path, groups: LayerGroups = LayerGroups(),
                  ultra: dict[int, int] | None = None, base_rank: int | None = None) -> dict[str, Path]:
    """profile.json, sensitivity.md and fidelity.png in `out_dir`; returns their paths by name."""
    from calderalab.report.plots import fidelity_plot
    from calderalab.report.sensitivity_tables import critical_table, group_table, noise_line, ultra_table

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"profile": profile.save(out_dir / "profile.json")}
    parts = ["# Layer sensitivity\n", noise_line(profile), "\n## Layer groups\n\n", group_table(profile, groups),
             "\n## Critical layers\n\n", critical_table(profile, zone)]
    if ultra and base_rank:
        parts += ["\n## Ultra ranks\n\n", ultra_table(base_rank, ultra)]
    paths["tables"] = out_dir / "sensitivity.md"
    paths["tables"].write_text("".join(parts))
    paths["plot"] = fidelity_plot(profile, out_dir / "fidelity.png", zone, groups)
    return paths
