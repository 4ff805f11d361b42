"""The `calderalab` command: one thin subcommand per job. Progress bars and printing live here.

This module holds the app, `compress` and `sensitivity`; the other commands are in
calderalab.commands (one module per kind of job) and are registered below.

Library code raises `CalderalabError` (or ValueError) with a message that names the problem
and the fix; `main()` prints it without a traceback and exits 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from calderalab import devices
from calderalab.commands import register
from calderalab.commands.common import DEVICE_OPTION, DTYPE_OPTION, LOAD_OPTION, OFFLOAD_DIR_OPTION
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
    codebook: str = typer.Option(None, "--codebook", help="quantiser of Q: scalar (group grid) | e8p (E8 lattice: 2 bits; 3 and 4 bits with a residual code)"),
    svd: str = typer.Option(None, "--svd", help="caldera's SVD start of each round: exact (default) | randomized "
                            "(a seeded sketch: about 3x faster SVDs, relative errors within 0.5 percent of exact on SmolLM2 layers 5 and 20; other bits)"),
    outer_iters: int = typer.Option(None, "--outer-iters"),
    inner_iters: int = typer.Option(None, "--inner-iters"),
    damp: float = typer.Option(None, help="Hessian damping, fraction of the mean diagonal"),
    seed: int = typer.Option(None, help="seed of rotations and calibration sampling"),
    plan: str = typer.Option(None, "--plan", help="plan file (JSON/YAML); 'budget': bits and rank per layer "
                             "under --bpw from --profile; 'kl': LDLQ bits per module under --bpw, least predicted KL"),
    protect: str = typer.Option(None, "--protect", help="layers kept original, e.g. 23-27 or last:5"),
    ranks: str = typer.Option(None, "--ranks", help="ultra plan: per-layer ranks, e.g. 23:256,24:128"),
    bpw: float = typer.Option(None, "--bpw", help="budget / kl plan: target bits per weight (kept layers count 16)"),
    profile: str = typer.Option(None, "--profile", help="budget plan: a profile.json of `calderalab sensitivity`"),
    budget_bits: str = typer.Option(None, "--budget-bits", help="budget / kl plan: bits to choose from (default 2,3,4; "
                                    "kl: 2,3,4,5,6,8)"),
    budget_ranks: str = typer.Option(None, "--budget-ranks", help="budget plan: ranks to choose from (default 0 and the profile's)"),
    save_plan: Path = typer.Option(None, "--save-plan", help="also write the plan as JSON (for eval/export/validate --plan)"),
    calib: str = typer.Option(None, "--calib", help="calibration source: 'self' (model-generated), a .txt file, a GSM8K "
                              ".jsonl, or 'auto' (default: the reference GSM8K questions beside the checkout, else self)"),
    calib_samples: int = typer.Option(None, "--calib-samples", help="number of calibration sequences (default 32)"),
    seq_len: int = typer.Option(None, "--seq-len", help="tokens per calibration sequence"),
    hessian_dtype: str = typer.Option(None, "--hessian-dtype", help="float32 (default) | bfloat16: the calibration "
                                      "forward passes and XᵀX products of the Hessians in bfloat16 (sums in float32; "
                                      "about 3x faster on a CPU with AMX); the weights decomposed stay as loaded"),
    executor: str = typer.Option("local", help="local | ray"),
    num_cpus: int = typer.Option(None, "--num-cpus", help="CPUs for a local Ray instance"),
    threads: int = typer.Option(None, "--threads", help="intra-op threads of each decomposition (default: torch's, "
                                "e.g. OMP_NUM_THREADS); the bytes depend on it, so pass the same N to reproduce a "
                                "store elsewhere; with --executor ray each task reserves N CPUs"),
    device: str = DEVICE_OPTION,
    dtype: str = DTYPE_OPTION,
    offload_dir: str = OFFLOAD_DIR_OPTION,
) -> None:
    """Compress MODEL into an artifact store (resumes an interrupted run). A safetensors checkpoint is
    read one decoder layer at a time, so it may be larger than memory."""
    import time

    from rich.console import Console

    from calderalab import compress as compress_lib
    from calderalab import models
    from calderalab.artifacts.preflight import open_for_writing
    from calderalab.executors import check_executor, resolve_threads
    from calderalab.experiments.config import CompressSettings
    from calderalab.plans import spec_with

    console = Console()
    threads = resolve_threads(threads)  # a bad count or executor fails before the model loads
    check_executor(executor, num_cpus, threads)
    run_device, run_dtype = devices.resolve(device, dtype)  # a missing GPU fails here, before the model loads
    calib_config = CompressSettings().with_options(calib_source=calib, calib_samples=calib_samples, calib_seq_len=seq_len,
                                                   seed=seed, hessian_dtype=hessian_dtype).calib
    fields = {"bits": bits, "rank": rank, "method": method, "lr_bits": lr_bits, "group_size": group_size,
              "codebook": codebook, "outer_iters": outer_iters, "inner_iters": inner_iters, "damp": damp, "seed": seed,
              "svd": svd}
    if plan == "budget":
        if any(v is not None for v in (bits, rank, method, protect, ranks)):
            raise ValueError("--plan budget chooses bits and rank per layer: drop --bits/--rank/--method/--protect/--ranks")
        request = _budget_request(model, bpw, profile, budget_bits, budget_ranks)
    elif plan == "kl":
        if any(v is not None for v in (bits, rank, method, protect, ranks, profile, budget_ranks, group_size, lr_bits,
                                       outer_iters, inner_iters, damp)):
            raise ValueError("--plan kl chooses LDLQ bits per module from --bpw (and --budget-bits, --codebook): drop "
                             "--bits/--rank/--method/--protect/--ranks/--profile/--budget-ranks/--group-size/--lr-bits/"
                             "--outer-iters/--inner-iters/--damp")
        request = _kl_request(model, bpw, budget_bits, codebook, seed)
    elif any(v is not None for v in (bpw, profile, budget_bits, budget_ranks)):
        raise ValueError("--bpw, --profile, --budget-bits and --budget-ranks belong to --plan budget (--bpw and "
                         "--budget-bits also to --plan kl)")
    else:
        the_plan = _checked_plan(model, spec_with(None, **fields) if bits is not None else None, plan, protect, ranks)
    the_store = open_for_writing(out, model)  # missing bucket, denied write, newer format: fail before the load
    t0 = time.perf_counter()
    # the KL plan's Fisher needs a backward pass through the whole model: in memory when it fits
    model_obj, tokenizer = (models.open_to_run(model, run_dtype, run_device, "auto") if plan == "kl" else
                            models.open_model(model, run_dtype, run_device))
    console.print(f"opened {model} in {time.perf_counter() - t0:.1f}s ({devices.describe(run_device, run_dtype)})")
    identity = models.model_identity(model)

    def run(a_plan, label: str, calib_data=None, hessians=None):
        progress, on_event = _compress_events(console, label)
        try:
            return compress_lib.compress_model(model_obj, a_plan, the_store, calib_data or calib_config, executor=executor,
                                               progress=on_event, tokenizer=tokenizer, model_ref=identity,
                                               num_cpus=num_cpus, hessians=hessians, offload_dir=offload_dir,
                                               threads=threads)
        finally:
            progress.stop()

    if plan == "budget":
        the_plan = _budget_plan(console, request, run, model_obj, tokenizer, calib_config, offload_dir)
    elif plan == "kl":
        the_plan = _kl_plan(console, request, run, model_obj, tokenizer, calib_config, offload_dir)
    report = run(the_plan, f"plan {the_plan.preset}")
    if save_plan is not None:
        save_plan.write_text(the_plan.to_json())
        console.print(f"plan written to {save_plan}")
    _print_compress_report(console, out, report)


def _budget_plan(console, request, run, model_obj, tokenizer, calib_config, offload_dir):
    """Compress the budget's candidate specs (calibration and Hessians made once), choose, print the map."""
    from calderalab import budget
    from calderalab.calib import collect_hessians, load_calibration

    settings, the_profile, shapes = request
    calib = load_calibration(model_obj, tokenizer, calib_config)
    hessians = list(collect_hessians(model_obj, calib.batches, offload_dir=offload_dir,
                                     forward_dtype=calib.forward_dtype))  # every candidate reuses them
    chosen = budget.budget_plan(the_profile, settings, shapes,
                                lambda p: run(p, f"candidate {budget.option_name(p.spec(0, 'q'))}", calib, hessians))
    console.print(budget.map_table(chosen), highlight=False, markup=False)
    console.print(budget.summary_line(chosen, settings), highlight=False, markup=False)
    return chosen.plan


def _kl_request(model: str, bpw: float | None, budget_bits: str | None, codebook: str | None, seed: int | None):
    """(KLBudgetSettings, module shapes) of `--plan kl`, checked before the model loads."""
    from calderalab import budget, kl_budget, models

    if bpw is None:
        raise ValueError("--plan kl needs --bpw (the target bits per weight, e.g. 4.3)")
    given = {"bits": budget.parse_ints(budget_bits, "--budget-bits"), "codebook": codebook, "seed": seed}
    settings = kl_budget.KLBudgetSettings(bpw, **{k: v for k, v in given.items() if v is not None})
    shapes = models.module_shapes(models.load_skeleton(model))
    kl_budget.check_target(settings, shapes)
    return settings, shapes


def _kl_plan(console, request, run, model_obj, tokenizer, calib_config, offload_dir):
    """Hessians and the Fisher once, every candidate compressed uniformly (resumable), the knapsack."""
    from calderalab import kl_budget
    from calderalab.calib import collect_hessians, load_calibration
    from calderalab.calib.fisher import output_sensitivity

    settings, _ = request
    kl_budget.check_in_memory(model_obj)
    calib = load_calibration(model_obj, tokenizer, calib_config)
    hessians = list(collect_hessians(model_obj, calib.batches, offload_dir=offload_dir,
                                     forward_dtype=calib.forward_dtype))
    with make_progress(eta=True, console=console) as progress:
        task = progress.add_task("output sensitivity (Fisher)", total=None)
        sensitivity = output_sensitivity(model_obj, calib.token_ids, settings.fisher,
                                         lambda done, total: progress.update(task, completed=done, total=total))
    chosen = kl_budget.kl_budget_plan(model_obj, settings, sensitivity, hessians,
                                      lambda p: run(p, f"candidate {p.spec(0, 'q').key()}", calib, hessians))
    for line in kl_budget.summary_lines(chosen):
        console.print(line, highlight=False, markup=False)
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


@app.command("sensitivity")
def sensitivity_cmd(
    model: str = typer.Argument("smollm2", help="model reference (smollm2, gemma3-270m, hub id, local dir, .gguf)"),
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
    zone_metric: str = typer.Option(None, "--zone-metric", help="fidelity | kl | margin: the critical zone from bootstrap "
                                    "intervals of this metric (no threshold); also intervals.png (default: fidelity threshold)"),
    by_family: bool = typer.Option(False, "--by-family", help="also per-layer metrics per task family: heatmap, zones, test"),
    family_key: str = typer.Option("family", "--family-key", help="--by-family groups by 'family' (23) or 'category' (5)"),
    device: str = DEVICE_OPTION,
    dtype: str = DTYPE_OPTION,
    load: str = LOAD_OPTION,
    offload_dir: str = OFFLOAD_DIR_OPTION,
) -> None:
    """Per-layer sensitivity profile: fidelity / margin / KL, critical zone, tables and U-shape plot."""
    from calderalab.allocation import ultra_ranks
    from calderalab.experiments.config import CompressSettings, merged
    from calderalab.models import module_shapes, num_layers, open_to_run
    from calderalab.plans import parse_layer_set
    from calderalab.report.sensitivity_report import write_outputs
    from calderalab.sensitivity import SensitivitySettings
    from calderalab.sensitivity.pipeline import CompressOnTheFly, StoredWeights, run_sensitivity

    from calderalab.sensitivity.families import GROUP_KEYS

    load = devices.check_load(load)
    if by_family and family_key not in GROUP_KEYS:
        raise ValueError(f"--family-key must be one of {', '.join(GROUP_KEYS)}, got {family_key!r}")
    run_device, run_dtype = devices.resolve(device, dtype)
    settings = merged(SensitivitySettings(), n_samples=samples, threshold=threshold, zone_metric=zone_metric)
    settings = merged(settings, measure=merged(settings.measure, max_new_tokens=max_new_tokens))
    if artifacts is not None:  # the store is opened and checked now, so a bad store fails before the model loads
        from calderalab.artifacts.preflight import open_for_model

        weights = StoredWeights(open_for_model(artifacts, model))
    else:
        chosen_compress = CompressSettings().with_options(bits=bits, rank=rank, calib_source=calib, calib_samples=calib_samples)
        weights = CompressOnTheFly(chosen_compress.base, chosen_compress.calib, offload_dir)
    clock = _StageClock()
    net, tok = open_to_run(model, run_dtype, run_device, load)
    clock.done(f"load model ({devices.describe(run_device, run_dtype)})")
    chosen = parse_layer_set(layers, num_layers(net)) if layers else None
    with _progress() as bar:
        task = bar.add_task("layers", total=len(chosen) if chosen else num_layers(net))
        run = run_sensitivity(net, tok, settings, weights, chosen, model_ref=model, stage=clock.done,
                              progress=lambda done, total: bar.update(task, completed=done))
    rank = weights.spec.rank
    max_rank = min(min(shape) for shape in module_shapes(net).values())
    ultra = ultra_ranks(run.profile, rank, run.zone, max_rank=max_rank) if run.zone and rank > 0 else None
    paths = write_outputs(run.profile, run.zone, out, settings.groups, ultra, rank, settings.zone_metric,
                          family_key if by_family else None, settings.bootstrap)
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


register(app)


def main() -> None:
    try:
        app()
    except (CalderalabError, ValueError, OSError) as err:  # OSError: unreadable files, permissions, ...
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)
