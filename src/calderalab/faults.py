"""Deterministic crash points for the fault tests: a real SIGKILL at a named point, chosen by an env var.

`CALDERALAB_FAULT=manifest_write:2` makes the process send itself SIGKILL the 2nd time it reaches
the point named `manifest_write` (counted from process start). A SIGKILL cannot be caught, so
nothing is flushed, no `finally` runs and no temp file is cleaned up: exactly what a power cut,
an OOM killer or a preempted node does to a long compression. The tests run a real subprocess
with the variable set, then resume without it and compare the artifacts with an uninterrupted run.

Points (where they are reached):
- `hessian`          calib/capture.py, after each calibration batch through a hooked decoder layer
- `decompose`        executors.py, as each module's decomposition starts (local executor)
- `module_write`     artifacts/atomic.py, halfway through writing a module's temp file (flushed);
                     on an object store, just before the PUT
- `manifest_write`   the same, for manifest.json or an entries/ sidecar
- `results_commit`   results.py, after a run's rows are inserted, before COMMIT

Unset (the normal case), `point()` is one dictionary lookup. Standard library only.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

ENV_VAR = "CALDERALAB_FAULT"
POINTS = ("hessian", "decompose", "module_write", "manifest_write", "results_commit")

_hits: dict[str, int] = {}


def parse(spec: str) -> tuple[str, int]:
    """'module_write:3' -> ('module_write', 3); anything else raises ValueError naming the forms."""
    name, _, count = spec.partition(":")
    if name not in POINTS or not count.isdigit() or int(count) < 1:
        raise ValueError(f"{ENV_VAR}={spec!r} is not POINT:N with N >= 1 and POINT one of {', '.join(POINTS)}")
    return name, int(count)


def point(name: str, before_kill: Callable[[], object] | None = None) -> None:
    """Kill this process with SIGKILL if `CALDERALAB_FAULT` names this point and this is its N-th hit.

    `before_kill` runs first (e.g. flushing a half-written file so it really is half on disk).
    """
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    target, count = parse(spec)
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == count:
        if before_kill is not None:
            before_kill()
        os.kill(os.getpid(), signal.SIGKILL)
