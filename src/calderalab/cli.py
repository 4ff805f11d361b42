"""The `calderalab` command: one thin subcommand per job. Progress bars and printing live here.

Library code raises `CalderalabError` (or ValueError) with a message that names the problem
and the fix; `main()` prints it without a traceback and exits 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from calderalab.errors import CalderalabError
from calderalab.progress import make_progress

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


def _checked_plan(model: str, spec, plan_file: str | None, protect: str | None, ranks: str | None):
    """The plan from options (a plan file, or uniform / selective (--protect) / ultra (--ranks) of
    `spec`), validated against the model's structure (meta device, no weights read): a bad model
    reference, spec, plan file, layer set or rank fails here, before the model is loaded."""
    from calderalab import models, plans

    shapes = models.module_shapes(models.load_skeleton(model))
    n_layers = 1 + max(layer for layer, _ in shapes)
    if plan_file is not None:
        if protect or ranks:
            raise ValueError("--plan already says which layers are protected or re-ranked: drop --protect/--ranks")
        the_plan = plans.load_plan(plan_file, n_layers)
    elif protect and ranks:
        raise ValueError("use either --protect (keep layers original) or --ranks (ultra: per-layer CALDERA ranks), not both")
    elif spec is None:
        raise ValueError("give --bits (and --rank for CALDERA), a --plan file, or --plan budget")
    else:
        the_plan = (plans.selective_plan(n_layers, spec, protect) if protect else
                    plans.ultra_plan(n_layers, spec, ranks) if ranks else plans.uniform_plan(n_layers, spec))
    the_plan.validate(shapes)
    return the_plan


def _budget_request(model: str, bpw: float | None, profile: str | None, budget_bits: str | None, budget_ranks: str | None):
    """(BudgetSettings, profile, module shapes) of `--plan budget`, all checked before the model loads."""
    from calderalab import budget, models

    if bpw is None or profile is None:
        raise ValueError("--plan budget needs --bpw (the target bits per weight) and --profile (a profile.json of "
                         "`calderalab sensitivity`)")
    grid = {"bits": budget.parse_ints(budget_bits, "--budget-bits"), "ranks": budget.parse_ints(budget_ranks, "--budget-ranks")}
    settings = budget.BudgetSettings(bpw, **{k: v for k, v in grid.items() if v is not None})
    the_profile = budget.load_profile(profile)
    shapes = models.module_shapes(models.load_skeleton(model))
    budget.check_budget(the_profile, settings, shapes)
    return settings, the_profile, shapes


def _compress_events(console, label: str):
    """(progress display, on_event) that render compress_model's events."""
    from calderalab import compress as compress_lib

    progress = make_progress(eta=True, console=console)
    task = None

    def on_event(event) -> None:
        nonlocal task
        if isinstance(event, compress_lib.CompressStarted):
            b = event.plan_bpw
            console.print(f"{label} hash {event.plan_hash[:16]}  bpw {b.bpw_compressed_only:.3f} "
                          f"(compressed modules), {b.bpw_fp16:.3f} (whole model, protected as fp16)")
            console.print(f"{event.n_modules} modules, {event.n_modules - event.n_todo} already stored, {event.n_todo} to do")
            if event.n_todo:
                progress.start()
                task = progress.add_task("calibrating", total=len(event.todo_layers))
        elif isinstance(event, compress_lib.CalibrationReady):
            progress.console.print(f"calibration: {event.description}; {event.n_tokens} tokens, sha256 {event.token_sha256[:16]}")
            progress.update(task, description="layers")
        elif isinstance(event, compress_lib.LayerCompressed):
            worst = min(r.weight_correlation for r in event.results)
            progress.update(task, advance=1, description=f"layer {event.layer:>3} (min corr {worst:.3f})")

    return progress, on_event


@app.command()
def compress(
    model: str = typer.Argument(..., help="model reference: smollm2, an HF id, a local dir or a .gguf file"),
    out: str = typer.Option(..., "--out", help="artifact store: a directory or an fsspec URL (s3://...)"),
    bits: int = typer.Option(None, help="bits of the backbone Q (2-8)"),
    rank: int = typer.Option(None, help="rank k of L·R (CALDERA); 0 or unset with --method ldlq/rtn"),
    method: str = typer.Option(None, help="caldera | ldlq | rtn (default: caldera with --rank, else ldlq)"),
    lr_bits: int = typer.Option(None, "--lr-bits", help="bits of L and R"),
    group_size: int = typer.Option(None, "--group-size", help="quantisation group size of Q (default: one group per row)"),
    outer_iters: int = typer.Option(None, "--outer-iters"),
    inner_iters: int = typer.Option(None, "--inner-iters"),
    damp: float = typer.Option(None, help="Hessian damping, fraction of the mean diagonal"),
    seed: int = typer.Option(None, help="seed of rotations and calibration sampling"),
    plan: str = typer.Option(None, "--plan", help="plan file (JSON/YAML), or 'budget': bits and rank per layer "
                             "under --bpw from --profile"),
    protect: str = typer.Option(None, "--protect", help="layers kept original, e.g. 23-27 or last:5"),
    ranks: str = typer.Option(None, "--ranks", help="ultra plan: per-layer ranks, e.g. 23:256,24:128"),
    bpw: float = typer.Option(None, "--bpw", help="budget plan: target bits per weight (kept layers count 16)"),
    profile: str = typer.Option(None, "--profile", help="budget plan: a profile.json of `calderalab sensitivity`"),
    budget_bits: str = typer.Option(None, "--budget-bits", help="budget plan: bits to choose from (default 2,3,4)"),
    budget_ranks: str = typer.Option(None, "--budget-ranks", help="budget plan: ranks to choose from (default 0 and the profile's)"),
    save_plan: Path = typer.Option(None, "--save-plan", help="also write the plan as JSON (for eval/export/validate --plan)"),
    calib: str = typer.Option(None, "--calib", help="calibration source: 'self' (model-generated), a .txt file, a GSM8K "
                              ".jsonl, or 'auto' (default: the reference GSM8K questions beside the checkout, else self)"),
    calib_samples: int = typer.Option(None, "--calib-samples", help="number of calibration sequences (default 32)"),
    seq_len: int = typer.Option(None, "--seq-len", help="tokens per calibration sequence"),
    executor: str = typer.Option("local", help="local | ray"),
    num_cpus: int = typer.Option(None, "--num-cpus", help="CPUs for a local Ray instance"),
) -> None:
    """Compress MODEL into an artifact store (resumes an interrupted run)."""
    import time

    from rich.console import Console

    from calderalab import compress as compress_lib
    from calderalab import models
    from calderalab.artifacts import ArtifactStore
    from calderalab.experiments.config import CompressSettings
    from calderalab.plans import spec_with

    console = Console()
    calib_config = CompressSettings().with_options(calib_source=calib, calib_samples=calib_samples, calib_seq_len=seq_len,
                                                   seed=seed).calib
    fields = {"bits": bits, "rank": rank, "method": method, "lr_bits": lr_bits, "group_size": group_size,
              "outer_iters": outer_iters, "inner_iters": inner_iters, "damp": damp, "seed": seed}
    if plan == "budget":
        if any(v is not None for v in (bits, rank, method, protect, ranks)):
            raise ValueError("--plan budget chooses bits and rank per layer: drop --bits/--rank/--method/--protect/--ranks")
        request = _budget_request(model, bpw, profile, budget_bits, budget_ranks)
    elif any(v is not None for v in (bpw, profile, budget_bits, budget_ranks)):
        raise ValueError("--bpw, --profile, --budget-bits and --budget-ranks belong to --plan budget")
    else:
        the_plan = _checked_plan(model, spec_with(None, **fields) if bits is not None else None, plan, protect, ranks)
    the_store = ArtifactStore(out)
    if the_store.exists():
        the_store.header()  # a store of a newer format fails now, not after the model load
    t0 = time.perf_counter()
    model_obj, tokenizer = models.load_model(model)
    console.print(f"loaded {model} in {time.perf_counter() - t0:.1f}s")
    identity = models.model_identity(model)

    def run(a_plan, label: str, calib_data=None, hessians=None):
        progress, on_event = _compress_events(console, label)
        try:
            return compress_lib.compress_model(model_obj, a_plan, the_store, calib_data or calib_config, executor=executor,
                                               progress=on_event, tokenizer=tokenizer, model_ref=identity,
                                               num_cpus=num_cpus, hessians=hessians)
        finally:
            progress.stop()

    if plan == "budget":
        the_plan = _budget_plan(console, request, run, model_obj, tokenizer, calib_config)
    report = run(the_plan, f"plan {the_plan.preset}")
    if save_plan is not None:
        save_plan.write_text(the_plan.to_json())
        console.print(f"plan written to {save_plan}")
    _print_compress_report(console, out, report)


def _budget_plan(console, request, run, model_obj, tokenizer, calib_config):
    """Compress the budget's candidate specs (calibration and Hessians made once), choose, print the map."""
    from calderalab import budget
    from calderalab.calib import collect_hessians, load_calibration

    settings, the_profile, shapes = request
    calib = load_calibration(model_obj, tokenizer, calib_config)
    hessians = list(collect_hessians(model_obj, calib.batches))  # every candidate reuses them
    chosen = budget.budget_plan(the_profile, settings, shapes,
                                lambda p: run(p, f"candidate {budget.option_name(p.spec(0, 'q'))}", calib, hessians))
    console.print(budget.map_table(chosen), highlight=False, markup=False)
    console.print(budget.summary_line(chosen, settings), highlight=False, markup=False)
    return chosen.plan


def _print_compress_report(console, out: str, report) -> None:
    from rich.table import Table

    table = Table(title=f"{out}: {len(report.modules)} modules ({report.n_resumed} resumed) in {report.seconds:.1f}s")
    for col in ("layer", "modules", "rel. error", "corr (mean)", "corr (min)", "bpw"):
        table.add_column(col, justify="right")
    for row in report.per_layer():
        table.add_row(str(row["layer"]), str(row["n_modules"]), f"{row['relative_error']:.4f}", f"{row['weight_correlation']:.4f}",
                      f"{row['min_weight_correlation']:.4f}", f"{row['bpw']:.3f}")
    console.print(table)
    console.print(f"mean weight correlation {report.mean_weight_correlation:.4f}; plan hash {report.plan_hash}")


@app.command()
def validate(
    model: str = typer.Argument(..., help="model reference the artifacts were made from"),
    store: str = typer.Argument(..., help="artifact store directory or URL"),
    min_corr: float = typer.Option(None, "--min-corr", help="fail modules whose weight correlation is below this"),
    no_replacement: bool = typer.Option(False, "--no-replacement", help="skip the single-layer replacement check"),
    plan: str = typer.Option(None, "--plan", help="plan file choosing among several stored specs"),
) -> None:
    """Check artifacts against MODEL: checksums, fingerprints, weight correlation, single-layer replacement. Exit 1 on failure."""
    from rich.console import Console
    from rich.table import Table

    from calderalab import models, plans
    from calderalab.artifacts import ArtifactStore
    from calderalab.artifacts.validate import ValidationConfig, validate_store

    console = Console()
    given = {"min_correlation": min_corr, "replacement_check": (False if no_replacement else None)}
    config = ValidationConfig(**{k: v for k, v in given.items() if v is not None})
    the_store = ArtifactStore(store)
    the_store.header()  # a missing store or one of a newer format fails before the model load
    model_obj, tokenizer = models.load_model(model)
    the_plan = plans.load_plan(plan, models.num_layers(model_obj)) if plan else None
    with console.status("validating"):
        report = validate_store(model_obj, tokenizer, the_store, config, plan=the_plan)
    layer_checks = {l.layer: l for l in report.layers}
    table = Table(title=f"{store}: {len(report.modules)} modules; reference answer {report.reference_text!r}")
    for col in ("layer", "corr (mean)", "corr (min)", "rel. error", "bpw", "replacement", "status"):
        table.add_column(col, justify="right")
    for layer in sorted({m.layer for m in report.modules}):
        ms = [m for m in report.modules if m.layer == layer]
        corrs = [m.weight_correlation for m in ms if m.weight_correlation is not None]
        errs = [m.relative_error for m in ms if m.relative_error is not None]
        bpws = [m.bpw for m in ms if m.bpw is not None]
        lc = layer_checks.get(layer)
        ok = all(m.ok for m in ms) and (lc is None or lc.ok)
        table.add_row(str(layer), f"{sum(corrs) / len(corrs):.4f}" if corrs else "-", f"{min(corrs):.4f}" if corrs else "-",
                      f"{sum(errs) / len(errs):.4f}" if errs else "-", f"{sum(bpws) / len(bpws):.3f}" if bpws else "-",
                      "-" if lc is None else f"{lc.agreement:.2f} / {lc.exact_prefix} exact",
                      "[green]ok[/green]" if ok else "[red]FAIL[/red]")
    console.print(table)
    console.print(f"mean weight correlation {report.mean_weight_correlation:.4f} (threshold {config.min_correlation})")
    if not report.passed:
        for line in report.failures():
            console.print(f"[red]FAIL[/red] {line}")
        raise typer.Exit(1)
    console.print("[green]validation passed[/green]")


@app.command()
def export(
    model: str = typer.Argument(..., help="model reference the artifacts were made from"),
    store: str = typer.Argument(..., help="artifact store directory or URL"),
    out: str = typer.Option(..., "--out", help="output directory for the Hugging Face checkpoint"),
    protect: str = typer.Option(None, "--protect", help="layers to keep original"),
    plan: str = typer.Option(None, "--plan", help="plan file choosing among several stored specs"),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Write MODEL with the stored artifacts applied as a de-quantised HF checkpoint (from_pretrained / vLLM)."""
    import json

    from calderalab import models, plans
    from calderalab.artifacts import ArtifactStore, apply_artifacts

    model_obj, tokenizer = models.load_model(model)
    n_layers = models.num_layers(model_obj)
    protected = plans.parse_layer_set(protect, n_layers) if protect else ()
    the_plan = plans.load_plan(plan, n_layers) if plan else None
    the_store = ArtifactStore(store)
    apply_artifacts(model_obj, the_store, protect=protected, plan=the_plan)
    provenance = {"source_model": models.model_identity(model), "artifacts": store, "protected_layers": list(protected),
                  "artifact_header": the_store.header().to_dict()}
    path = models.export_checkpoint(model_obj, tokenizer, out, overwrite=overwrite,
                                    extra_files={"calderalab_provenance.json": json.dumps(provenance, indent=1, sort_keys=True)})
    typer.echo(f"exported {n_layers} layers ({len(model_obj.calderalab_applied.applied)} compressed modules) to {path}")


@app.command()
def ppl(
    model: str = typer.Argument(..., help="model reference"),
    data: str = typer.Option(..., "--data", help="text file, e.g. ../shared/data/wikitext-2/test.txt"),
    artifacts: str = typer.Option(None, "--artifacts", help="artifact store to apply first; adds ratio, KL and top-1 vs the original"),
    protect: str = typer.Option(None, "--protect", help="layers kept original when applying artifacts"),
    context: int = typer.Option(512, "--context", help="tokens per window"),
    stride: int = typer.Option(256, "--stride", help="window step; each token is scored once"),
    max_tokens: int = typer.Option(None, "--max-tokens", help="score only the first N tokens of the text"),
    batch_size: int = typer.Option(4, "--batch-size"),
    reference_cache: str = typer.Option(None, "--reference-cache",
                                        help="where the original model's reference is cached (default $CALDERALAB_CACHE/ppl-reference)"),
) -> None:
    """Sliding-window perplexity of MODEL on a text file; with --artifacts, also the perplexity ratio,
    KL(original ‖ compressed) per token and top-1 agreement against the original on the same windows."""
    from pathlib import Path

    from calderalab import models, plans
    from calderalab.artifacts import ArtifactStore, apply_artifacts
    from calderalab.eval.fidelity import load_or_build_reference, measure_against, summary_lines
    from calderalab.eval.perplexity import score_token_ids, token_ids

    if protect and not artifacts:
        raise ValueError("--protect only makes sense with --artifacts")
    model_obj, tokenizer = models.load_model(model)
    ids = token_ids(tokenizer, Path(data).read_text(encoding="utf-8"), max_tokens)
    if not artifacts:
        result = score_token_ids(model_obj, ids, context, stride, batch_size)[0]
        typer.echo(f"perplexity {result.perplexity:.4f}  ({result.n_scored_tokens} tokens, {result.n_windows} windows, "
                   f"context {result.context_len}, stride {result.stride})")
        return
    cache = Path(reference_cache) if reference_cache else models.calderalab_cache_dir() / "ppl-reference"
    reference = load_or_build_reference(model_obj, ids, context, stride, cache, batch_size)  # original weights
    protected = plans.parse_layer_set(protect, models.num_layers(model_obj)) if protect else ()
    apply_artifacts(model_obj, ArtifactStore(artifacts), protect=protected)
    for line in summary_lines(measure_against(model_obj, reference, ids, batch_size)):
        typer.echo(line)



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
    n: int | None = typer.Option(None, help="instances per family and seed (ladder: per ladder, k and seed; "
                                 "gsm8k: rows per seed); default 5"),
    seeds: str | None = typer.Option(None, help="instance seeds, comma-separated (default 0,1,2)"),
    scoring: str | None = typer.Option(None, help="choice (debiased letters, default), cloze (option texts) or generate"),
    canonical: bool = typer.Option(False, "--canonical", help="only the report's seven canonical tests (N=7: no claim)"),
    ladder: bool = typer.Option(False, "--ladder", help="the difficulty ladder: rates against the number of steps k"),
    plot: Path = typer.Option(Path("reports/eval/ladder.png"), help="where --ladder writes its plot"),
    suite: str | None = typer.Option(None, help="goodhart (default) or gsm8k; --canonical and --ladder pick the others"),
    data: str | None = typer.Option(None, help="GSM8K: a test.jsonl or the data dir holding gsm8k/ (default: shared data)"),
    batch_size: int | None = typer.Option(None, help="prompts per forward pass (default: the runner's)"),
    tasks_dir: list[str] = typer.Option([], "--tasks-dir", help="extra task-family directory (repeatable)"),
    db: str = typer.Option("runs.sqlite", help="results database file"),
    label: str = typer.Option("", help="row label, e.g. '3-bit selective'"),
    experiment: str = typer.Option("", help="experiment name to group runs"),
) -> None:
    """Evaluate understanding and execution (Goodhart Gap) with chance levels and validity, store the run."""
    from calderalab.eval.job import EvalJob, run_eval_job
    from calderalab.experiments.config import merged

    if sum([canonical, ladder, suite is not None]) > 1:
        raise typer.BadParameter("pick one of --canonical, --ladder and --suite")
    chosen = "canonical" if canonical else "ladder" if ladder else suite
    job = merged(EvalJob(model_ref=model), scoring=scoring, suite=chosen, n=n,
                 seeds=_parse_seeds(seeds) if seeds else None, data_path=data, tasks_dirs=tuple(tasks_dir) or None,
                 artifacts=artifacts, protect=protect, batch_size=batch_size, label=label or None,
                 experiment=experiment or None)
    with _progress() as bar:
        task = bar.add_task(f"evaluating {model} ({job.suite}, {job.scoring} scoring)", total=None)
        run_id, outcomes = run_eval_job(job, db, progress=lambda done, total: bar.update(task, completed=done, total=total))
    _print_eval(job, outcomes, plot)
    _console().print(f"\nstored as run [bold]{run_id}[/bold] in {db}  (compare with: calderalab compare RUN_A {run_id})")


def _print_eval(job, outcomes, plot: Path) -> None:
    """The validity sentence first, then the tables (and the ladder's plot)."""
    from calderalab.eval.stats import adequacy
    from calderalab.report.tables import family_table, goodhart_table, per_test_grid, seed_table
    from calderalab.report.validity_tables import (letter_share_table, ladder_plot_file, ladder_table,
                                                   validity_preamble, validity_table)

    typer.echo(validity_preamble(outcomes) + "\n")
    if job.suite == "ladder":
        typer.echo(ladder_table([outcomes]))
        typer.echo(f"\nplot: {ladder_plot_file([outcomes], plot, title=f'{job.model_ref}: rates against steps')}")
    typer.echo("\n" + goodhart_table([outcomes], note=False))
    typer.echo("\n" + validity_table([outcomes]))
    typer.echo("\n" + letter_share_table([outcomes]))
    if len(job.instance_seeds) > 1:
        typer.echo("\n" + seed_table([outcomes]))
    # A per-test grid is readable up to a few dozen rows; beyond that, summarise per family.
    typer.echo("\n" + (per_test_grid([outcomes]) if outcomes.n <= 40 else family_table(outcomes)))
    note = adequacy(outcomes.n)
    if note:
        _console().print(f"\n[yellow]Note:[/yellow] {note}")


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
    bits: int = typer.Option(None, help="b_Q of the per-layer compression (default 3)"),
    rank: int = typer.Option(None, help="rank k of L·R (default 32; 0 = ldlq)"),
    samples: int = typer.Option(None, help="probe samples N (default 24)"),
    threshold: float = typer.Option(None, help="fidelity threshold of the critical zone (default 0.15)"),
    layers: str = typer.Option(None, help="layer set to profile, e.g. 'last:5' or '0-3' (default all)"),
    out: Path = typer.Option(Path("runs/sensitivity"), help="output directory"),
    calib: str = typer.Option(None, help="calibration source of the Hessians: 'self' (model-generated text), a text / "
                              "GSM8K .jsonl file, or 'auto' (default: the reference GSM8K questions beside the checkout)"),
    calib_samples: int = typer.Option(None, help="calibration windows (default 32)"),
    max_new_tokens: int = typer.Option(None, help="cap of the reference answers in tokens (default 24)"),
    artifacts: str = typer.Option(None, help="profile the modules stored in this artifact store (local dir or fsspec "
                                  "URL, e.g. from `calderalab compress`) instead of compressing each layer here; "
                                  "--bits, --rank and --calib are then taken from / not needed by the store"),
) -> None:
    """Per-layer sensitivity profile: fidelity / margin / KL, critical zone, tables and U-shape plot."""
    from calderalab.allocation import ultra_ranks
    from calderalab.experiments.config import CompressSettings, merged
    from calderalab.models import load_model, module_shapes, num_layers
    from calderalab.plans import parse_layer_set
    from calderalab.report.sensitivity_report import write_outputs
    from calderalab.sensitivity import SensitivitySettings
    from calderalab.sensitivity.pipeline import CompressOnTheFly, StoredWeights, run_sensitivity

    settings = merged(SensitivitySettings(), n_samples=samples, threshold=threshold)
    settings = merged(settings, measure=merged(settings.measure, max_new_tokens=max_new_tokens))
    if artifacts is not None:  # the store's manifest is read now, so a bad URL fails before the model loads
        from calderalab.artifacts import ArtifactStore

        weights = StoredWeights(ArtifactStore(artifacts))
    else:
        chosen_compress = CompressSettings().with_options(bits=bits, rank=rank, calib_source=calib, calib_samples=calib_samples)
        weights = CompressOnTheFly(chosen_compress.base, chosen_compress.calib)
    clock = _StageClock()
    net, tok = load_model(model)
    clock.done("load model")
    chosen = parse_layer_set(layers, num_layers(net)) if layers else None
    with _progress() as bar:
        task = bar.add_task("layers", total=len(chosen) if chosen else num_layers(net))
        run = run_sensitivity(net, tok, settings, weights, chosen, model_ref=model, stage=clock.done,
                              progress=lambda done, total: bar.update(task, completed=done))
    rank = weights.spec.rank
    max_rank = min(min(shape) for shape in module_shapes(net).values())
    ultra = ultra_ranks(run.profile, rank, run.zone, max_rank=max_rank) if run.zone and rank > 0 else None
    paths = write_outputs(run.profile, run.zone, out, settings.groups, ultra, rank)
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


def _progress():
    return make_progress(transient=True)




# ---------------------------------------------------------------- experiments commands
# (section owned by the experiments work; add commands below this line)


def _stage_progress():
    """A progress display with one bar (or plain lines) per stage; returns (context manager, callback)."""
    bar = make_progress()
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=max(total, 1))
        bar.update(tasks[stage], completed=done, total=max(total, 1))

    return bar, update


def _session(model, out, artifacts, db, device, bits, rank, calib, scoring, n_per_family, seeds, generate_canonical, experiment, progress):
    import dataclasses

    from calderalab.experiments import CompressSettings, EvalSettings, RunSettings, Session, merged

    run = merged(RunSettings(), model=model, out=str(out) if out else None, artifacts=artifacts, db=db, device=device)
    compress = CompressSettings().with_options(bits=bits, rank=rank, calib_source=calib)
    seed_tuple = tuple(int(x) for x in seeds.split(",")) if seeds else None
    evals = merged(EvalSettings(), scoring=scoring, n_per_family=n_per_family, seeds=seed_tuple, generate_canonical=generate_canonical)
    return Session.open(run, compress, evals, experiment, progress=progress), {
        "run": run.__dict__, "compress": dataclasses.asdict(compress), "eval": evals.__dict__}


def _print_experiment(paths, result) -> None:
    from rich.console import Console
    from rich.markdown import Markdown

    console = Console()
    for section in result.sections[:2]:
        console.print(Markdown(section.render()))
    for name, path in paths.items():
        console.print(f"{name}: {path}")


_MODEL = typer.Argument("smollm2", help="model reference (smollm2, hub id, local dir, .gguf)")
_OUT = typer.Option(None, "--out", help="report folder (default reports/study)")
_ARTIFACTS = typer.Option(None, "--artifacts", help="artifact store dir or URL (default <out>/artifacts)")
_DB = typer.Option(None, "--db", help="results database (default <out>/results.sqlite)")
_DEVICE = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:1 ... (default auto)")
_BITS = typer.Option(None, "--bits", help="b_Q of the uniform spec (default 3)")
_RANK = typer.Option(None, "--rank", help="rank k of L·R (default 32; 0 = ldlq)")
_CALIB = typer.Option(None, "--calib", help="calibration source: self, a text file or a GSM8K .jsonl")
_SCORING = typer.Option(None, "--scoring", help="probe scoring of the suite: choice or generate (default choice)")
_NPF = typer.Option(None, "--n-per-family", help="generated instances per family and seed (default 1)")
_SEEDS = typer.Option(None, "--seeds", help="instance seeds, e.g. 0,1,2 (default 0)")
_GEN = typer.Option(None, "--generate-canonical/--no-generate-canonical", help="also score the canonical seven by generation")


@app.command()
def ablate(
    model: str = _MODEL,
    protect_layers: list[str] = typer.Option(..., "--protect-layers", help="a protection set, repeatable: 23,24,25,26,27 or last:3"),
    out: Path = _OUT, artifacts: str = _ARTIFACTS, db: str = _DB, device: str = _DEVICE, bits: int = _BITS, rank: int = _RANK,
    calib: str = _CALIB, scoring: str = _SCORING, n_per_family: int = _NPF, seeds: str = _SEEDS, generate_canonical: bool = _GEN,
) -> None:
    """Baseline vs uniform vs uniform with each protection set (report Experiments 1–2), from artifacts."""
    from calderalab import experiments

    bar, update = _stage_progress()
    with bar:
        session, config = _session(model, out, artifacts, db, device, bits, rank, calib, scoring, n_per_family, seeds, generate_canonical, "ablate", update)
        result = experiments.ablate(session, protect_layers)
        paths = experiments.finish(session, result, {**config, "protect_layers": protect_layers})
    _print_experiment(paths, result)


@app.command()
def sweep(
    model: str = _MODEL,
    protect: str = typer.Option("last:10,last:5,last:3,last:1", "--protect", help="protection sets separated by ';' or tail specs by ','"),
    out: Path = _OUT, artifacts: str = _ARTIFACTS, db: str = _DB, device: str = _DEVICE, bits: int = _BITS, rank: int = _RANK,
    calib: str = _CALIB, scoring: str = _SCORING, n_per_family: int = _NPF, seeds: str = _SEEDS, generate_canonical: bool = _GEN,
) -> None:
    """Protection sweep (the report's 72B sweep table, per-test grid, execution vs protected plot)."""
    from calderalab import experiments

    sets = [p.strip() for p in (protect.split(";") if ";" in protect else protect.split(",")) if p.strip()]
    bar, update = _stage_progress()
    with bar:
        session, config = _session(model, out, artifacts, db, device, bits, rank, calib, scoring, n_per_family, seeds, generate_canonical, "sweep", update)
        result = experiments.sweep(session, sets)
        paths = experiments.finish(session, result, {**config, "protect": sets})
    _print_experiment(paths, result)


@app.command("min-protect")
def min_protect_cmd(
    model: str = _MODEL,
    margin: float = typer.Option(None, "--margin", help="non-inferiority margin: largest execution drop vs baseline to rule out, as a rate (default 0.05 = 5 points)"),
    out: Path = _OUT, artifacts: str = _ARTIFACTS, db: str = _DB, device: str = _DEVICE, bits: int = _BITS, rank: int = _RANK,
    calib: str = _CALIB, scoring: str = _SCORING, n_per_family: int = _NPF, seeds: str = _SEEDS,
) -> None:
    """Smallest protected tail whose execution is non-inferior to the baseline (one-sided 95% upper bound of the paired drop below --margin; binary search)."""
    from calderalab import experiments
    from calderalab.search import MarginTest

    if margin is not None:
        MarginTest(margin=margin)  # a bad margin fails here, before the model loads
    bar, update = _stage_progress()
    with bar:
        session, config = _session(model, out, artifacts, db, device, bits, rank, calib, scoring, n_per_family, seeds, False, "min-protect", update)
        result = experiments.min_protect(session, margin)
        paths = experiments.finish(session, result, {**config, "margin": result.data["margin"], "level": result.data["level"]})
    _print_experiment(paths, result)


@app.command()
def grid(
    model: str = _MODEL,
    bits: str = typer.Option("2,3,4", "--bits", help="bit widths b_Q"),
    plans: str = typer.Option("uniform,selective", "--plans", help="uniform and/or selective"),
    protect: str = typer.Option(None, "--protect", help="selective's protected layers (default: the critical group by depth)"),
    out: Path = _OUT, artifacts: str = _ARTIFACTS, db: str = _DB, device: str = _DEVICE, rank: int = _RANK,
    calib: str = _CALIB, scoring: str = _SCORING, n_per_family: int = _NPF, seeds: str = _SEEDS, generate_canonical: bool = _GEN,
) -> None:
    """Bits x plans against the baseline: bitwidth tables (mean ± std over seeds) and execution vs bpw."""
    from calderalab import experiments

    bit_list = [int(b) for b in bits.split(",") if b.strip()]
    plan_list = [p.strip() for p in plans.split(",") if p.strip()]
    bar, update = _stage_progress()
    with bar:
        session, config = _session(model, out, artifacts, db, device, None, rank, calib, scoring, n_per_family, seeds, generate_canonical, "grid", update)
        result = experiments.grid(session, bit_list, plan_list, protect)
        paths = experiments.finish(session, result, {**config, "bits": bit_list, "plans": plan_list, "protect": protect})
    _print_experiment(paths, result)



# ---------------------------------------------------------------- report commands
# (section owned by the report work; add commands below this line)


@app.command()
def report(
    runs: list[str] = typer.Argument(..., help="run ids (or 'latest') in the results database; the first is the baseline"),
    out: Path = typer.Option(Path("reports/runs"), "--out", help="report folder"),
    db: str = typer.Option("runs.sqlite", "--db", help="results database"),
) -> None:
    """Markdown report (Goodhart table, per-test grid, McNemar vs the first run, bitwidth table) + plot from stored runs."""
    from calderalab.report.run_report import report_from_db

    paths = report_from_db(db, runs, out)
    typer.echo(paths["report"].read_text())
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")



# ---------------------------------------------------------------- study commands
# (section owned by the study work; add commands below this line)


@app.command()
def study(
    model: str = typer.Option(None, "--model", help="model reference (default smollm2, the embedded SmolLM2-135M-Instruct)"),
    out: Path = _OUT, artifacts: str = _ARTIFACTS, db: str = _DB, device: str = _DEVICE, bits: int = _BITS, rank: int = _RANK,
    calib: str = _CALIB, samples: int = typer.Option(None, "--samples", help="sensitivity probe samples N (default 24)"),
    threshold: float = typer.Option(None, "--threshold", help="critical-zone fidelity threshold (default 0.15)"),
    scoring: str = _SCORING, n_per_family: int = _NPF, seeds: str = _SEEDS, generate_canonical: bool = _GEN,
    ultra: bool = typer.Option(None, "--ultra/--no-ultra", help="also evaluate the ultra rank plan when a critical zone is measured (default on)"),
    budget_bpw: float = typer.Option(None, "--budget-bpw", help="also evaluate the budget plan at this bpw (bits and rank per layer from the profile)"),
) -> None:
    """The main job: sensitivity profile -> critical zone -> uniform / selective / ultra -> Goodhart Gap report."""
    from rich.console import Console
    from rich.markdown import Markdown

    from calderalab.experiments import CompressSettings, EvalSettings, RunSettings, SensitivitySettings, StudyConfig, merged
    from calderalab.experiments import study as run_study

    seed_tuple = tuple(int(x) for x in seeds.split(",")) if seeds else None
    config = merged(
        StudyConfig(),
        run=merged(RunSettings(), model=model, out=str(out) if out else None, artifacts=artifacts, db=db, device=device),
        compress=CompressSettings().with_options(bits=bits, rank=rank, calib_source=calib),
        sensitivity=merged(SensitivitySettings(), n_samples=samples, threshold=threshold),
        eval=merged(EvalSettings(), scoring=scoring, n_per_family=n_per_family, seeds=seed_tuple, generate_canonical=generate_canonical),
        ultra=ultra,
        budget_bpw=budget_bpw,
    )
    bar, update = _stage_progress()
    with bar:
        result = run_study(config, progress=update)
    console = Console()
    console.print(Markdown(result.summary))
    for name, path in result.paths.items():
        console.print(f"{name}: {path}")



def main() -> None:
    try:
        app()
    except (CalderalabError, ValueError, OSError) as err:  # OSError: unreadable files, permissions, ...
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)
