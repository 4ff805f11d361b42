"""Error types that reach the user. Imports nothing heavy.

Every error meant for a person subclasses `CalderalabError`; the CLI prints its message
(which names the problem and how to fix it) without a traceback.
"""

import difflib
from typing import Any


class CalderalabError(Exception):
    """A user-facing error: bad input, unknown model, mismatched artifacts, ..."""


class ModelRefError(CalderalabError, ValueError):
    """A model reference that cannot be resolved or loaded."""


class PlanError(CalderalabError, ValueError):
    """A compression plan that is malformed or does not fit the model."""


class ArtifactError(CalderalabError):
    """An artifact store that is missing, corrupted, or made from another model."""


class TaskFamilyError(CalderalabError, ValueError):
    """A task-family file that is malformed."""


class CompressionError(CalderalabError, RuntimeError):
    """A numerical failure inside a decomposition (e.g. Cholesky fails at maximum damping)."""


class ResultsError(CalderalabError):
    """A results database that is not ours, has a newer schema, or lacks the requested run."""


class StoreFullError(ArtifactError):
    """A write into an artifact store failed for lack of space (ENOSPC or a quota).

    `needed_bytes`: what the failed write (or, from the compressor, the rest of the job) needs;
    `free_bytes`: what the filesystem reported free afterwards (None when unknown).
    """

    def __init__(self, message: str, url: str, needed_bytes: int, free_bytes: int | None) -> None:
        super().__init__(message)
        self.url, self.needed_bytes, self.free_bytes = url, needed_bytes, free_bytes


def format_bytes(n: int | None) -> str:
    """1536 -> '1.5 KiB'; None -> 'unknown'."""
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def did_you_mean(unknown: list[str], known: Any) -> str:
    """' (did you mean 'bits'?)' when names in `unknown` look like typos of known ones; else ''."""
    pairs = [(u, m[0]) for u in unknown if (m := difflib.get_close_matches(u, sorted(known), n=1, cutoff=0.7))]
    if not pairs:
        return ""
    if len(unknown) == 1:
        return f" (did you mean {pairs[0][1]!r}?)"
    return " (did you mean " + ", ".join(f"{m!r} for {u!r}" for u, m in pairs) + "?)"
