"""`calderalab eval`, `compare`, `runs` and `report`: evaluation runs in the results database."""

from __future__ import annotations

from pathlib import Path

import typer

from calderalab.commands.common import DEVICE_OPTION, DTYPE_OPTION, LOAD_OPTION, MODEL_ARG, echo_blocks, stage_progress
from calderalab.results import DEFAULT_DB

DB_OPTION = typer.Option(DEFAULT_DB, "--db", help="results database file")


def eval_cmd(
    model: str = MODEL_ARG,
    artifacts: str = typer.Option(None, help="artifact store (dir or URL) to apply; omit for the baseline"),
    protect: str = typer.Option(None, help="layers kept original, e.g. 23-27, 23,24,25 or last:5"),
    n: int = typer.Option(None, help="instances per family and seed (ladder: per ladder, k and seed; "
                          "gsm8k: rows per seed); default 5"),
    seeds: str = typer.Option(None, help="instance seeds, comma-separated (default 0,1,2)"),
    scoring: str = typer.Option(None, help="choice (debiased letters, default), cloze (option texts) or generate"),
    canonical: bool = typer.Option(False, "--canonical", help="only the report's seven canonical tests (N=7: no claim)"),
    ladder: bool = typer.Option(False, "--ladder", help="the difficulty ladder: rates against the number of steps k"),
    plot: Path = typer.Option(None, help="where --ladder writes its plot (default reports/eval/ladder.png)"),
    suite: str = typer.Option(None, help="goodhart (default) or gsm8k; --canonical and --ladder pick the others"),
    data: str = typer.Option(None, help="GSM8K: a test.jsonl or the data dir holding gsm8k/ (default: shared data)"),
    batch_size: int = typer.Option(None, help="prompts per forward pass (default: the runner's)"),
    tasks_dir: list[str] = typer.Option([], "--tasks-dir", help="extra task-family directory (repeatable)"),
    db: str = DB_OPTION,
    label: str = typer.Option(None, help="row label, e.g. '3-bit selective'"),
    experiment: str = typer.Option(None, help="experiment name to group runs"),
    device: str = DEVICE_OPTION,
    dtype: str = DTYPE_OPTION,
    load: str = LOAD_OPTION,
) -> None:
    """Evaluate understanding and execution (Goodhart Gap) with chance levels and validity, store the run."""
    from rich.console import Console

    from calderalab.experiments.evaluation import run_eval_job
    from calderalab.experiments.options import eval_job
    from calderalab.report.run_views import eval_view

    job = eval_job(model, suite=suite, canonical=canonical, ladder=ladder, n=n, seeds=seeds, scoring=scoring,
                   batch_size=batch_size, data=data, tasks_dirs=tasks_dir, artifacts=artifacts, protect=protect,
                   label=label, experiment=experiment, device=device, dtype=dtype, load=load)
    stage = f"evaluating {model} ({job.settings.suite}, {job.settings.scoring} scoring)"
    bar, update = stage_progress(transient=True)
    with bar:
        run_id, outcomes = run_eval_job(job, db, progress=lambda done, total: update(stage, done, total))
    echo_blocks(eval_view(outcomes, job.settings.suite, job.settings.instance_seeds, model, plot))
    Console().print(f"\nstored as run [bold]{run_id}[/bold] in {db}  (compare with: calderalab compare RUN_A {run_id})")


def compare(
    run_a: str = typer.Argument(..., help="reference run id (or 'last')"),
    run_b: list[str] = typer.Argument(..., help="run id(s) compared against RUN_A"),
    db: str = DB_OPTION,
    n_boot: int = typer.Option(None, help="bootstrap resamples (default 10000)"),
    seed: int = typer.Option(None, help="bootstrap seed (default 0)"),
) -> None:
    """Paired comparison of stored runs on their common instances (McNemar, bootstrap CIs, Holm)."""
    from calderalab.report.run_views import compare_view

    given = {k: v for k, v in {"n_boot": n_boot, "seed": seed}.items() if v is not None}
    echo_blocks(compare_view(db, run_a, run_b, **given))


def runs(
    db: str = DB_OPTION,
    experiment: str = typer.Option(None, help="only runs of this experiment"),
) -> None:
    """List the runs stored in the results database (a Markdown table)."""
    from calderalab.report.run_views import runs_view

    echo_blocks(runs_view(db, experiment))


def report(
    runs: list[str] = typer.Argument(..., help="run ids (or 'latest') in the results database; the first is the baseline"),
    out: Path = typer.Option(None, "--out", help="report folder (default reports/runs)"),
    db: str = DB_OPTION,
) -> None:
    """Markdown report (Goodhart table, per-test grid, McNemar vs the first run, bitwidth table) + plot from stored runs."""
    from calderalab.report.run_report import report_from_db

    paths = report_from_db(db, runs, out) if out is not None else report_from_db(db, runs)
    typer.echo(paths["report"].read_text())
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


COMMANDS = {"eval": eval_cmd, "compare": compare, "runs": runs, "report": report}
