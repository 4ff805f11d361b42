"""Which code made a stored result: the calderalab version and a hash of the source that computes it.

A store or cache keyed only by spec (or calibration) outlives the code that filled it: a store
made by an older decomposition would be resumed, and its numbers reported as the current code's.
So every module entry records the calderalab version and `core_code_hash()` (the bytes of
src/calderalab/core/*.py), and resume reuses an entry only when both match (`stale_reason`).
Hessian caches key on `source_hash("calib")` the same way.

Reads the package's own source files (once per process, memoised); never imports transformers.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from calderalab import __version__

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # src/calderalab


def directory_source_hash(directory: Path) -> str:
    """sha256 over the *.py files directly in `directory`, sorted by name: each file's name, length, bytes.

    Names and lengths go in so that moving code between files, or renaming one, changes the hash.
    """
    files = sorted(directory.glob("*.py"), key=lambda p: p.name)
    if not files:
        raise ValueError(f"no Python source files in {directory}: cannot hash the code that made a result")
    digest = hashlib.sha256()
    for path in files:
        data = path.read_bytes()
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


@functools.lru_cache(maxsize=None)
def source_hash(package: str) -> str:
    """Hash of src/calderalab/<package>/*.py (e.g. "core", "calib"), computed once per process."""
    return directory_source_hash(PACKAGE_ROOT / package)


def core_code_hash() -> str:
    """Hash of the decomposition code (src/calderalab/core/*.py): what made a stored module."""
    return source_hash("core")


def stale_reason(entry: Any, tool_version: str | None = None, core_hash: str | None = None,
                 threads: int | None = None) -> str | None:
    """Why a stored module entry must not be reused by this code, or None when it may.

    `entry` has `tool_version` and `core_hash` (None in stores written before they were recorded:
    such entries are stale too, since nothing says which code made them). The defaults are
    this process's calderalab version and core hash. With `threads` (the intra-op thread count this
    run decomposes at), an entry that records another count is stale: MKL's last bits depend on it.
    An entry written before the count was recorded is not checked on it (those runs used torch's
    default count, which a run without --threads uses too).
    """
    tool_version = __version__ if tool_version is None else tool_version
    core_hash = core_code_hash() if core_hash is None else core_hash
    if entry.core_hash != core_hash:
        stored = "an unrecorded version" if entry.core_hash is None else entry.core_hash[:8]
        return f"stored by core {stored}, this code is {core_hash[:8]}"
    if entry.tool_version != tool_version:
        return f"stored by calderalab {entry.tool_version}, this is calderalab {tool_version}"
    if threads is not None and entry.threads is not None and entry.threads != threads:
        return f"decomposed at {entry.threads} intra-op threads, this run uses {threads}"
    return None
