"""The `calderalab` command: one thin subcommand per job. Progress bars and printing live here.

Library code raises `CalderalabError` (or ValueError) with a message that names the problem
and the fix; `main()` prints it without a traceback and exits 2.
"""

from __future__ import annotations

import sys

import typer

from calderalab.errors import CalderalabError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=__doc__.splitlines()[0])


@app.callback()
def _root() -> None:
    """calderalab: CALDERA compression, layer sensitivity and Goodhart Gap evaluation."""


@app.command()
def version() -> None:
    """Print the calderalab version."""
    from calderalab import __version__

    typer.echo(__version__)


# ---------------------------------------------------------------- models commands
# (section owned by the models work; add commands below this line)



# ---------------------------------------------------------------- compression commands
# (section owned by the compression work; add commands below this line)



# ---------------------------------------------------------------- evaluation commands
# (section owned by the evaluation work; add commands below this line)


def _console():
    from rich.console import Console

    return Console()


def _parse_seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(f"--seeds must be comma-separated integers like 0,1,2, got {text!r}") from None


@app.command("eval")
def eval_cmd(
    model: str = typer.Argument("smollm2", help="model reference: smollm2, a HF id, a local dir or a .gguf"),
    artifacts: str | None = typer.Option(None, help="artifact store (dir or URL) to apply; omit for the baseline"),
    protect: str | None = typer.Option(None, help="layers kept original, e.g. 23-27, 23,24,25 or last:5"),
    n: int | None = typer.Option(None, help="instances per seed (default: the report's seven canonical tests)"),
    seeds: str = typer.Option("0", help="instance seeds, comma-separated"),
    scoring: str = typer.Option("choice", help="generate (greedy, parsed) or choice (log-likelihood)"),
    suite: str = typer.Option("goodhart", help="goodhart or gsm8k"),
    data: str | None = typer.Option(None, help="GSM8K: a test.jsonl or the data dir holding gsm8k/ (default: shared data)"),
    batch_size: int | None = typer.Option(None, help="prompts per forward pass (default: the runner's)"),
    tasks_dir: list[str] = typer.Option([], "--tasks-dir", help="extra task-family directory (repeatable)"),
    db: str = typer.Option("runs.sqlite", help="results database file"),
    label: str = typer.Option("", help="row label, e.g. '3-bit selective'"),
    experiment: str = typer.Option("", help="experiment name to group runs"),
) -> None:
    """Evaluate understanding and execution (Goodhart Gap), print the tables, and store the run."""
    from calderalab.eval.job import EvalJob, run_eval_job
    from calderalab.eval.stats import adequacy
    from calderalab.report.tables import goodhart_table, per_test_grid, seed_table

    job = EvalJob(model_ref=model, scoring=scoring, suite=suite, n=n, seeds=_parse_seeds(seeds), data_path=data,
                  tasks_dirs=tuple(tasks_dir), artifacts=artifacts, protect=protect, batch_size=batch_size, label=label,
                  experiment=experiment)
    console = _console()
    with console.status(f"evaluating {model} ({scoring} scoring)"):
        run_id, outcomes = run_eval_job(job, db)
    typer.echo(goodhart_table([outcomes], note=False))
    if len(job.seeds) > 1:
        typer.echo("\n" + seed_table([outcomes]))
    typer.echo("\n" + per_test_grid([outcomes]))
    note = adequacy(outcomes.n)
    if note:
        console.print(f"\n[yellow]Note:[/yellow] {note}")
    console.print(f"\nstored as run [bold]{run_id}[/bold] in {db}  (compare with: calderalab compare RUN_A {run_id})")



# ---------------------------------------------------------------- statistics commands
# (section owned by the statistics work; add commands below this line)


@app.command()
def compare(
    run_a: str = typer.Argument(..., help="reference run id (or 'last')"),
    run_b: list[str] = typer.Argument(..., help="run id(s) compared against RUN_A"),
    db: str = typer.Option("runs.sqlite", help="results database file"),
    n_boot: int = typer.Option(10_000, help="bootstrap resamples"),
    seed: int = typer.Option(0, help="bootstrap seed"),
) -> None:
    """Paired comparison of stored runs on their common instances (McNemar, bootstrap CIs, Holm)."""
    import dataclasses

    from calderalab.report.tables import comparison_table, goodhart_table, per_test_grid
    from calderalab.results import ResultsDB, comparability_notes

    notes: list[str] = []
    with ResultsDB(db) as store:
        stored_a = store.get_run(run_a)
        a = store.run_outcomes(stored_a.run_id)
        a = dataclasses.replace(a, label=f"{a.label} (#{stored_a.run_id})")
        others = []
        for ref in run_b:
            stored_b = store.get_run(ref)
            b = store.run_outcomes(stored_b.run_id)
            others.append(dataclasses.replace(b, label=f"{b.label} (#{stored_b.run_id})"))
            common = len(set(a.by_uid()) & set(b.by_uid()))
            if common != a.n or common != b.n:
                notes.append(f"runs {stored_a.run_id} and {stored_b.run_id} are compared on their {common} common instances")
            notes += comparability_notes(stored_a, stored_b)
    typer.echo(goodhart_table([a, *others], note=False))
    typer.echo("\n" + comparison_table(a, others, n_boot=n_boot, seed=seed))
    for line in notes:
        _console().print(f"[yellow]Note:[/yellow] {line}")
    if a.n <= 40:
        typer.echo("\n" + per_test_grid([a, *others]))


@app.command()
def runs(
    db: str = typer.Option("runs.sqlite", help="results database file"),
    experiment: str | None = typer.Option(None, help="only runs of this experiment"),
) -> None:
    """List the runs stored in the results database (a Markdown table)."""
    from calderalab.report.tables import markdown_table
    from calderalab.results import ResultsDB

    rows = []
    with ResultsDB(db) as store:
        for r in store.list_runs(experiment):
            o = store.run_outcomes(r.run_id)
            und = f"{o.n_understood}/{o.n_probed}" if o.n_probed else "–"
            rows.append([str(r.run_id), r.created_at[:19], r.display_label, r.record.model_ref,
                         r.record.protected_label, r.record.suite, str(r.n_instances),
                         ",".join(map(str, r.record.seeds)), r.record.scoring, f"{o.n_executed}/{o.n}", und,
                         r.record.experiment or "-"])
    if not rows:
        _console().print(f"no runs in {db} yet; run `calderalab eval` first")
        return
    header = ["id", "time (UTC)", "label", "model", "protected", "suite", "N", "seeds", "scoring", "exec", "und",
              "experiment"]
    typer.echo(markdown_table(header, rows))



# ---------------------------------------------------------------- sensitivity commands
# (section owned by the sensitivity work; add commands below this line)



# ---------------------------------------------------------------- experiments commands
# (section owned by the experiments work; add commands below this line)



# ---------------------------------------------------------------- report commands
# (section owned by the report work; add commands below this line)



# ---------------------------------------------------------------- study commands
# (section owned by the study work; add commands below this line)



def main() -> None:
    try:
        app()
    except (CalderalabError, ValueError, FileNotFoundError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)
