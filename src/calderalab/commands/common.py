"""What the command modules share: the experiment option set, printing, one progress display."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import typer

from calderalab import devices
from calderalab.progress import make_progress
from calderalab.results import FOLDER_DB

MODEL_ARG = typer.Argument("smollm2", help="model reference: smollm2, a HF id, a local dir or a .gguf")
DEVICE_OPTION = typer.Option(None, "--device", help=devices.DEVICES_HELP)
DTYPE_OPTION = typer.Option(None, "--dtype", help=devices.DTYPES_HELP)
OFFLOAD_DIR_OPTION = typer.Option(None, "--offload-dir", help="keep the calibration activations between layers as "
                                    "files in this folder instead of in memory")
LOAD_OPTION = typer.Option(None, "--load", help="memory: every weight in memory; layers: decoder layers read from the "
                           "safetensors shards one at a time during each forward (larger-than-memory models; slower); "
                           "auto (default): layers when the checkpoint exceeds half the memory available")

# The options every experiment command shares (ablate, sweep, min-protect, grid, study): name ->
# (type, typer option). Each defaults to None, which keeps the settings' own default
# (experiments.options.study_config).
EXPERIMENT_OPTIONS: dict[str, tuple[type, Any]] = {
    "out": (str, typer.Option(None, "--out", help="report folder (default reports/study)")),
    "artifacts": (str, typer.Option(None, "--artifacts", help="artifact store dir or URL (default <out>/artifacts)")),
    "db": (str, typer.Option(None, "--db", help=f"results database (default <out>/{FOLDER_DB})")),
    "device": (str, DEVICE_OPTION),
    "dtype": (str, DTYPE_OPTION),
    "load": (str, LOAD_OPTION),
    "bits": (int, typer.Option(None, "--bits", help="b_Q of the uniform spec (default 3)")),
    "rank": (int, typer.Option(None, "--rank", help="rank k of L·R (default 32; 0 = ldlq)")),
    "outer_iters": (int, typer.Option(None, "--outer-iters", help="CALDERA outer iterations (default 2; `compress`: 4)")),
    "inner_iters": (int, typer.Option(None, "--inner-iters", help="L/R rounds per outer iteration (default 1; `compress`: 3)")),
    "calib": (str, typer.Option(None, "--calib", help="calibration source: self, a text file or a GSM8K .jsonl")),
    "scoring": (str, typer.Option(None, "--scoring", help="probe scoring: choice, cloze or generate (default choice)")),
    "n_per_family": (int, typer.Option(None, "--n-per-family", help="generated instances per family and seed (default 1)")),
    "seeds": (str, typer.Option(None, "--seeds", help="instance seeds, e.g. 0,1,2 (default 0)")),
    "generate_canonical": (bool, typer.Option(None, "--generate-canonical/--no-generate-canonical",
                                              help="also score the canonical seven by generation")),
}


def experiment_command(exclude: tuple[str, ...] = ()) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the shared experiment options (all of EXPERIMENT_OPTIONS but `exclude`).

    The decorated function declares its own options and a keyword `options`: the shared ones
    arrive there as one dict (None for those not given), ready for `study_config(**options)`.
    """
    names = [n for n in EXPERIMENT_OPTIONS if n not in exclude]

    def wrap(fn: Callable[..., None]) -> Callable[..., None]:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "options"]
        shared = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=EXPERIMENT_OPTIONS[n][1],
                                    annotation=EXPERIMENT_OPTIONS[n][0]) for n in names]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> None:
            options = {n: kwargs.pop(n) for n in names}
            fn(options=options, **kwargs)

        params = [*own, *shared]
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return wrap


def echo_blocks(blocks: list[tuple[str, str]]) -> None:
    """Print a report view (report.run_views): text as is, notes highlighted."""
    from rich.console import Console

    for kind, text in blocks:
        if kind == "note":
            Console().print(f"[yellow]Note:[/yellow] {text}")
        else:
            typer.echo(text)


def stage_progress(transient: bool = False) -> tuple[Any, Callable[[str, int, int], None]]:
    """A progress display with one bar (or plain lines) per stage: (context manager, update(stage, done, total))."""
    bar = make_progress(transient=transient)
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=max(total, 1))
        bar.update(tasks[stage], completed=done, total=max(total, 1))

    return bar, update
