"""`calderalab profiles`: sensitivity profiles of several models side by side (the research
report's "7B vs 72B" table for any profiles) and overlaid on relative depth.

`calderalab report` already takes run ids from the results database, so the cross-model view is
its own command over profile.json files.
"""

from __future__ import annotations

from pathlib import Path

import typer


def profiles(
    files: list[Path] = typer.Argument(..., help="profile.json files of `calderalab sensitivity` (two or more)"),
    names: str = typer.Option(None, "--names", help="column names, comma-separated (default: the profile's model, else the folder)"),
    zone_metric: str = typer.Option(None, "--zone-metric", help="fidelity | kl | margin: zones by bootstrap intervals "
                                    "(profiles need per-sample values); default: the fidelity threshold rule"),
    threshold: float = typer.Option(None, "--threshold", help="fidelity threshold of the default zone rule (default 0.15)"),
    out: Path = typer.Option(Path("reports/profiles"), "--out", help="folder for comparison.md and profiles.png"),
) -> None:
    """Compare sensitivity profiles of different models: samples, early fidelity, middle and late margins, zone as a share of depth."""
    from calderalab.budget import load_profile
    from calderalab.experiments.config import merged
    from calderalab.report.profile_comparison import ZoneRule, write_comparison

    labels = [n.strip() for n in names.split(",")] if names else None
    if labels is not None and len(labels) != len(files):
        raise ValueError(f"--names gives {len(labels)} names for {len(files)} profiles: give one per file")
    loaded = [load_profile(f) for f in files]
    labels = labels or [str(p.settings.get("model") or f.parent.name or f.stem) for f, p in zip(files, loaded)]
    rule = merged(ZoneRule(), metric=zone_metric, threshold=threshold)
    paths = write_comparison(list(zip(labels, loaded)), out, rule)
    typer.echo(paths["tables"].read_text())
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


COMMANDS = {"profiles": profiles}
