"""The `calderalab` command: one thin subcommand per job. Progress bars and printing live here.

Library code raises `CalderalabError` (or ValueError) with a message that names the problem
and the fix; `main()` prints it without a traceback and exits 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

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


@app.command()
def inspect(
    model: str = typer.Argument(..., help="smollm2, an HF id in the local cache, a model directory, or a .gguf file"),
    weights: bool = typer.Option(False, "--weights", help="load the weights too (identity hash; slower)"),
) -> None:
    """Print a model's decoder layer count and its target modules with shapes and parameter counts."""
    from rich.console import Console
    from rich.table import Table

    from calderalab.models import discover_layers, load_model, load_skeleton, model_identity, resolve_model_ref

    model_ref = resolve_model_ref(model)
    net = load_model(model_ref)[0] if weights else load_skeleton(model_ref)
    layers = discover_layers(net)
    console = Console()
    console.print(f"[bold]{model_ref.display_name}[/bold]  ({model_ref.kind}: {model_ref.path})")
    if weights:
        console.print(f"identity: {model_identity(model_ref)}")
    console.print(f"architecture: {type(net).__name__}   decoder layers: {len(layers)}")
    table = Table(title="target modules (per decoder layer)")
    for column in ("module", "path in layer", "shape (d_out, d_in)", "params / layer", "params, all layers"):
        table.add_column(column, justify="right" if column.startswith("params") else "left")
    console.print(f"decoder layers at: {layers[0].path.rsplit('.', 1)[0]}.<i>")
    total = 0
    for name, shape in layers[0].shapes.items():
        per_layer = shape[0] * shape[1]
        all_layers = sum(t.shapes[name][0] * t.shapes[name][1] for t in layers)
        total += all_layers
        in_layer = layers[0].qualified_names[name][len(layers[0].path) + 1 :]
        table.add_row(name, in_layer, f"{shape[0]} x {shape[1]}", f"{per_layer:,}", f"{all_layers:,}")
    console.print(table)
    n_params = sum(p.numel() for p in net.parameters())
    console.print(f"target parameters: {total:,} of {n_params:,} ({100 * total / n_params:.1f}%; the rest: embeddings, norms, lm_head)")



# ---------------------------------------------------------------- compression commands
# (section owned by the compression work; add commands below this line)



# ---------------------------------------------------------------- evaluation commands
# (section owned by the evaluation work; add commands below this line)



# ---------------------------------------------------------------- statistics commands
# (section owned by the statistics work; add commands below this line)
# `eval` (stores runs in the results database) lives here, beside compare/runs, so that it does
# not collide with the evaluation section's own commands.


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
    from calderalab.report.tables import family_table, goodhart_table, per_test_grid, seed_table

    job = EvalJob(model_ref=model, scoring=scoring, suite=suite, n=n, seeds=_parse_seeds(seeds), data_path=data,
                  tasks_dirs=tuple(tasks_dir), artifacts=artifacts, protect=protect, batch_size=batch_size, label=label,
                  experiment=experiment)
    console = _console()
    with _progress() as bar:
        task = bar.add_task(f"evaluating {model} ({scoring} scoring)", total=None)
        run_id, outcomes = run_eval_job(job, db, progress=lambda done, total: bar.update(task, completed=done, total=total))
    typer.echo(goodhart_table([outcomes], note=False))
    if len(job.seeds) > 1:
        typer.echo("\n" + seed_table([outcomes]))
    # A per-test grid is readable up to a few dozen rows; beyond that, summarise per family.
    typer.echo("\n" + (per_test_grid([outcomes]) if outcomes.n <= 40 else family_table(outcomes)))
    note = adequacy(outcomes.n)
    if note:
        console.print(f"\n[yellow]Note:[/yellow] {note}")
    console.print(f"\nstored as run [bold]{run_id}[/bold] in {db}  (compare with: calderalab compare RUN_A {run_id})")



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

    from calderalab.report.tables import comparison_table, goodhart_table, per_test_grid, seed_table
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
    if all(len(r.seeds()) > 1 for r in (a, *others)):
        typer.echo("\n" + seed_table([a, *others]))
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


@app.command("sensitivity")
def sensitivity_cmd(
    model: str = typer.Argument("smollm2", help="model reference (smollm2, hub id, local dir, .gguf)"),
    bits: int = typer.Option(3, help="b_Q of the per-layer compression"),
    rank: int = typer.Option(32, help="rank k of L·R (0 = ldlq)"),
    samples: int = typer.Option(None, help="probe samples N (default 64)"),
    threshold: float = typer.Option(None, help="fidelity threshold of the critical zone (default 0.15)"),
    layers: str = typer.Option(None, help="layer set to profile, e.g. 'last:5' or '0-3' (default all)"),
    out: Path = typer.Option(Path("runs/sensitivity"), help="output directory"),
    calib: str = typer.Option("self", help="calibration source of the Hessians: 'self' (model-generated text) or a text / GSM8K .jsonl file"),
    calib_samples: int = typer.Option(None, help="calibration windows (default 16)"),
    max_new_tokens: int = typer.Option(None, help="cap of the reference answers in tokens (default 48)"),
) -> None:
    """Per-layer sensitivity profile: fidelity / margin / KL, critical zone, tables and U-shape plot."""
    import dataclasses

    from calderalab.allocation import ultra_ranks
    from calderalab.core import CompressionSpec, decompose
    from calderalab.models import discover_layers, load_model, num_layers
    from calderalab.plans import parse_layer_set
    from calderalab.sensitivity.pipeline import SensitivityJob, probe_prompt_ids, run_sensitivity, write_outputs

    job = SensitivityJob(**{k: v for k, v in {"n_samples": samples, "threshold": threshold, "calib_samples": calib_samples,
                                              "calib_source": calib}.items() if v is not None})
    if max_new_tokens is not None:
        job = dataclasses.replace(job, measure=dataclasses.replace(job.measure, max_new_tokens=max_new_tokens))
    spec = CompressionSpec(method="caldera" if rank > 0 else "ldlq", bits=bits, rank=rank, seed=job.seed)
    clock = _StageClock()
    net, tok = load_model(model)
    clock.done("load model")
    n_layers = num_layers(net)
    chosen = parse_layer_set(layers, n_layers) if layers else None
    prompts = probe_prompt_ids(tok, job.n_samples, job.seed)
    calib_batches, calib_description = _sensitivity_calibration(net, tok, prompts, job)
    clock.done("calibration data")
    with _progress() as bar:
        task = bar.add_task("layers", total=len(chosen) if chosen else n_layers)
        profile, zone = run_sensitivity(
            net, prompts, calib_batches, lambda W, H: decompose(W, H, spec).reconstruct(), job, chosen,
            eos_token_id=getattr(tok, "eos_token_id", None),
            settings={"model": model, "spec": spec.to_dict(), "spec_key": spec.key(), "calib_source": job.calib_source,
                      "calib": calib_description},
            progress=lambda done, total: bar.update(task, completed=done), stage=clock.done,
        )
    max_rank = min(min(m.weight.shape) for t in discover_layers(net) for m in t.modules.values())
    ultra = ultra_ranks(profile, rank, zone, max_rank=max_rank) if zone and rank > 0 else None
    paths = write_outputs(profile, zone, out, job.groups, ultra, rank)
    clock.done("write outputs")
    typer.echo(paths["tables"].read_text())
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")
    typer.echo("timings: " + ", ".join(f"{name} {sec:.1f}s" for name, sec in clock.stages))


class _StageClock:
    """Wall-clock seconds per stage of a command: echoed to stderr as each stage ends (long runs
    show where they are), and kept for the closing timing line."""

    def __init__(self) -> None:
        import time

        self._now = time.perf_counter
        self._last = self._now()
        self.stages: list[tuple[str, float]] = []

    def done(self, name: str) -> None:
        now = self._now()
        self.stages.append((name, now - self._last))
        self._last = now
        typer.echo(f"[{name}: {self.stages[-1][1]:.1f}s]", err=True)


def _sensitivity_calibration(net, tok, prompts, job) -> tuple[list, str]:
    """(batches, description): from calderalab.calib when available, else the probe prompts themselves."""
    import torch

    try:
        from calderalab.calib import CalibConfig, load_calibration
    except ImportError:
        typer.secho("calderalab.calib not available: calibrating on the probe prompts", fg=typer.colors.YELLOW, err=True)
        return [torch.tensor([p]) for p in prompts[: job.calib_samples]], "probe prompts (calderalab.calib not available)"
    data = load_calibration(net, tok, CalibConfig(source=job.calib_source, n_samples=job.calib_samples,
                                                  seq_len=job.calib_seq_len, seed=job.seed))
    return list(data.batches), data.description


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True)




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
