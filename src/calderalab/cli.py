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


def _suite_instances(suite: str, n: int | None, seed: int):
    """Instances of a named probe suite: canonical (the report's seven), generated, or gsm8k."""
    if suite == "gsm8k":
        from calderalab.eval.gsm8k import load_gsm8k

        return load_gsm8k("test", limit=n, seed=seed if n else None)
    from calderalab.eval import tasks

    if suite == "canonical":
        return tasks.canonical_instances()
    if suite == "generated":
        return tasks.generate_instances(tasks.load_families(), n_per_family=n or 3, seed=seed)
    raise typer.BadParameter(f"unknown suite {suite!r}; use canonical, generated or gsm8k")


@app.command("evaluate")
def evaluate_cmd(
    model: str = typer.Option("smollm2", help="model reference: smollm2, a hub id, a directory or a .gguf"),
    suite: str = typer.Option("canonical", help="canonical | generated | gsm8k"),
    n: int = typer.Option(None, help="instances per family (generated) or rows (gsm8k)"),
    seed: int = typer.Option(0, help="instance generation / sampling seed"),
    scoring: str = typer.Option(None, help="generate | choice (default: EvalConfig)"),
    batch_size: int = typer.Option(None, help="prompts per batch (default: EvalConfig)"),
    max_new_tokens: int = typer.Option(None, help="token cap for execution replies (default: EvalConfig)"),
) -> None:
    """Goodhart Gap evaluation of one model: understanding, execution, gaps."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from calderalab.eval.runner import evaluate
    from calderalab.models import load_model

    console = Console()
    instances = _suite_instances(suite, n, seed)
    lm, tokenizer = load_model(model)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"{suite}: {len(instances)} instances", total=None)
        run = evaluate(lm, tokenizer, instances, scoring=scoring, batch_size=batch_size, max_new_tokens=max_new_tokens,
                       progress=lambda done, total: bar.update(task, completed=done, total=total))
    s = run.summary()
    table = Table(title=f"{model} on {suite} ({run.config.scoring}, N={s.n})")
    for col in ("family", "N", "understanding", "execution", "gaps", "gaps/understood", "lucky"):
        table.add_column(col, justify="right")

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.0f}%"

    for name, fs in [*s.per_family.items(), ("all", s)]:
        table.add_row(name, str(fs.n), pct(fs.understanding_rate), pct(fs.execution_rate), f"{fs.gaps}/{fs.n_probed}",
                      pct(fs.conditional_gap_rate), str(fs.lucky))
    console.print(table)
    console.print(f"parse failures: {run.parse_failures}; truncated share: {run.truncated_share:.0%}; "
                  f"{run.generated_tokens} tokens in {run.seconds:.1f}s")



# ---------------------------------------------------------------- statistics commands
# (section owned by the statistics work; add commands below this line)



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
