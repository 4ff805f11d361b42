"""Provenance of an evaluation run, as plain data: what ran (model, artifacts, protected layers,
suite, seeds, scoring, decoding) and with which code (version, git sha). Standard library plus
the eval types; the results database (calderalab.results) stores these records.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from calderalab.eval.types import Scoring, check_scoring

def detect_git_sha(path: str | Path | None = None) -> str | None:
    """The git commit of the calderalab checkout ('<sha>-dirty' with uncommitted changes), or None.

    Only a repository whose src/calderalab *is* this package counts: an installed copy inside
    some other repository (a venv under a checkout) must not borrow that repository's sha.
    """
    pkg = Path(path) if path else Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=pkg, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() or None if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or (Path(top) / "src" / "calderalab").resolve() != pkg.resolve():
        return None
    sha = git("rev-parse", "HEAD")
    # Uncommitted changes to tracked files mean the sha alone does not reproduce the run.
    return f"{sha}-dirty" if sha and git("status", "--porcelain", "--untracked-files=no") else sha


def format_layers(layers: Sequence[int]) -> str:
    """Compact layer set: (23, 24, 25, 27) -> '23-25,27'; () -> ''."""
    parts: list[str] = []
    ordered = sorted(set(layers))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


@dataclass(frozen=True)
class RunRecord:
    """Provenance of one evaluation run (everything needed to reproduce and to compare it)."""

    model_ref: str
    scoring: Scoring
    suite: str = "goodhart"
    seeds: tuple[int, ...] = (0,)
    n_requested: int | None = None  # --n as asked; the stored N is the number of instances
    model_fingerprint: str = ""
    artifacts_manifest_hash: str | None = None  # None = the uncompressed model
    protected_layers: tuple[int, ...] = ()
    plan_hash: str | None = None
    decoding: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    experiment: str = ""
    tool_version: str = ""
    git_sha: str | None = None

    def __post_init__(self) -> None:
        if not self.model_ref:
            raise ValueError("RunRecord.model_ref is empty: name the evaluated model (e.g. 'smollm2')")
        check_scoring(self.scoring)
        if self.n_requested is not None and self.n_requested <= 0:
            raise ValueError(f"RunRecord.n_requested must be > 0, got {self.n_requested}")
        if any(layer < 0 for layer in self.protected_layers):
            raise ValueError(f"protected layers must be >= 0, got {self.protected_layers}")
        for name in ("decoding", "config"):
            try:
                json.dumps(getattr(self, name), sort_keys=True)
            except TypeError as err:
                raise ValueError(f"RunRecord.{name} must be JSON-serialisable: {err}") from None

    @property
    def protected_label(self) -> str:
        """'All' for the uncompressed model, 'None' when nothing is protected, else '70-79'."""
        if self.artifacts_manifest_hash is None:
            return "All"
        return format_layers(self.protected_layers) or "None"


@dataclass(frozen=True)
class StoredRun:
    """A run as read back from the database."""

    run_id: int
    created_at: str
    n_instances: int
    outcomes_hash: str
    record: RunRecord

    @property
    def display_label(self) -> str:
        return self.record.label or f"run {self.run_id}"


def comparability_notes(a: StoredRun, b: StoredRun) -> list[str]:
    """Plain-language warnings when two runs are not a clean paired comparison."""
    notes = []
    ra, rb = a.record, b.record
    if ra.model_fingerprint and rb.model_fingerprint and ra.model_fingerprint != rb.model_fingerprint:
        notes.append(f"runs {a.run_id} and {b.run_id} start from different base weights (model fingerprints differ)")
    for name in ("scoring", "suite"):
        if getattr(ra, name) != getattr(rb, name):
            notes.append(f"runs {a.run_id} and {b.run_id} differ in {name}: {getattr(ra, name)} vs {getattr(rb, name)}")
    if a.outcomes_hash == b.outcomes_hash:
        notes.append(f"runs {a.run_id} and {b.run_id} have identical outcomes on every probe")
    return notes
