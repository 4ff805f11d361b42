"""Progress for long jobs: rich bars on a terminal, plain lines otherwise (`make demo > log`, CI).

Only the CLI builds these (the library reports progress through callbacks). Both kinds offer the
two calls the CLI uses, `add_task(description, total)` and `update(task, completed=, total=)`, and
are context managers. A plain line is printed when a stage starts, each time it crosses another
tenth of its total (at most one line per `min_interval` seconds), and when it completes.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO


@dataclass
class _Task:
    description: str
    total: int | None
    started: float = field(default_factory=time.perf_counter)
    completed: int = 0
    tenth: int = 0  # the last tenth of the total a line was printed for (0: the start line)
    printed_at: float = field(default_factory=time.perf_counter)


class PlainProgress:
    """rich.progress.Progress's add_task/update, as plain lines on a stream."""

    def __init__(self, stream: TextIO | None = None, min_interval: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.min_interval = min_interval
        self.tasks: list[_Task] = []

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.flush()

    def add_task(self, description: str, total: int | None = None, **_: Any) -> int:
        self.tasks.append(_Task(description, total))
        self._line(self.tasks[-1], "started")
        return len(self.tasks) - 1

    def start(self) -> None:  # rich's explicit start/stop; lines need neither
        pass

    def stop(self) -> None:
        self.stream.flush()

    @property
    def console(self) -> "PlainProgress":
        return self

    def print(self, *objects: Any, **_: Any) -> None:
        """rich's console.print, as one plain line."""
        print(*objects, file=self.stream, flush=True)

    def update(self, task_id: int, completed: int | None = None, total: int | None = None, advance: int = 0,
               description: str | None = None, **_: Any) -> None:
        task = self.tasks[task_id]
        task.total = total if total is not None else task.total
        task.completed = (completed if completed is not None else task.completed) + advance
        task.description = description or task.description
        if not task.total:
            return
        tenth = min(10, int(10 * task.completed / task.total))
        now = time.perf_counter()
        done = task.completed >= task.total
        if tenth > task.tenth and (done or now - task.printed_at >= self.min_interval):
            task.tenth, task.printed_at = tenth, now
            self._line(task, f"{task.completed}/{task.total}" + (" done" if done else ""))

    def _line(self, task: _Task, state: str) -> None:
        elapsed = time.perf_counter() - task.started
        print(f"[{time.strftime('%H:%M:%S')}] {task.description}: {state} ({elapsed:.0f} s)", file=self.stream, flush=True)


def make_progress(transient: bool = False, eta: bool = False, console: Any = None) -> Any:
    """A rich progress display on a terminal, else PlainProgress on stderr."""
    if not sys.stderr.isatty():
        return PlainProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if eta:
        columns += [TextColumn("ETA"), TimeRemainingColumn()]
    return Progress(*columns, transient=transient, **({"console": console} if console is not None else {}))
