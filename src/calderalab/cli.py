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

from calderalab.commands import register
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


def _build_plan(n_layers: int, spec_fields: dict, plan_file: str | None, protect: str | None, ranks: str | None):
    """The plan from CLI options: --plan FILE, or uniform / selective (--protect) / ultra (--ranks)."""
    from calderalab import core, plans

    if plan_file is not None:
        if protect or ranks:
            raise ValueError("--plan already says which layers are protected or re-ranked: drop --protect/--ranks")
        return plans.load_plan(plan_file, n_layers)
    if protect and ranks:
        raise ValueError("use either --protect (keep layers original) or --ranks (ultra: per-layer CALDERA ranks), not both")
    spec = core.CompressionSpec(**spec_fields)
    if protect:
        return plans.selective_plan(n_layers, spec, protect)
    if ranks:
        return plans.ultra_plan(n_layers, spec, ranks)
    return plans.uniform_plan(n_layers, spec)


def _checked_plan(model: str, spec_fields: dict, plan_file: str | None, protect: str | None, ranks: str | None):
    """The plan, validated against the model's structure (meta device, no weights read): a bad model
    reference, spec, plan file, layer set or rank fails here, before the model is loaded."""
    from calderalab import models

    layers = models.discover_layers(models.load_skeleton(model))
    the_plan = _build_plan(len(layers), spec_fields, plan_file, protect, ranks)
    the_plan.validate({(t.index, name): shape for t in layers for name, shape in t.shapes.items()})
    return the_plan


def _spec_fields(method, bits, rank, lr_bits, group_size, outer_iters, inner_iters, damp, seed) -> dict:
    """Only the options the user gave: every default stays in CompressionSpec."""
    given = {"bits": bits, "rank": rank, "lr_bits": lr_bits, "group_size": group_size, "outer_iters": outer_iters,
             "inner_iters": inner_iters, "damp": damp, "seed": seed}
    fields = {k: v for k, v in given.items() if v is not None}
    fields["method"] = method or ("caldera" if rank else "ldlq")
    return fields


def _calib_config(source, n_samples, seq_len, seed):
    from calderalab.calib import CalibConfig

    given = {"source": source, "n_samples": n_samples, "seq_len": seq_len, "seed": seed}
    return CalibConfig(**{k: v for k, v in given.items() if v is not None})


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
    plan: str = typer.Option(None, "--plan", help="plan file (JSON/YAML)"),
    protect: str = typer.Option(None, "--protect", help="layers kept original, e.g. 23-27 or last:5"),
    ranks: str = typer.Option(None, "--ranks", help="ultra plan: per-layer ranks, e.g. 23:256,24:128"),
    calib: str = typer.Option(None, "--calib", help="calibration source: 'self' (model-generated), a .txt file or a GSM8K .jsonl"),
    calib_samples: int = typer.Option(None, "--calib-samples", help="number of calibration sequences"),
    seq_len: int = typer.Option(None, "--seq-len", help="tokens per calibration sequence"),
    executor: str = typer.Option("local", help="local | ray"),
    num_cpus: int = typer.Option(None, "--num-cpus", help="CPUs for a local Ray instance"),
) -> None:
    """Compress MODEL into an artifact store (resumes an interrupted run)."""
    import time

    from rich.console import Console
    from rich.table import Table

    from calderalab import compress as compress_lib
    from calderalab import models
    from calderalab.artifacts import ArtifactStore

    console = Console()
    calib_config = _calib_config(calib, calib_samples, seq_len, seed)
    spec_fields = _spec_fields(method, bits, rank, lr_bits, group_size, outer_iters, inner_iters, damp, seed)
    if "bits" not in spec_fields and plan is None:
        raise ValueError("give --bits (and --rank for CALDERA) or a --plan file")
    the_plan = _checked_plan(model, spec_fields, plan, protect, ranks)
    the_store = ArtifactStore(out)
    if the_store.exists():
        the_store.header()  # a store of a newer format fails now, not after the model load
    t0 = time.perf_counter()
    model_obj, tokenizer = models.load_model(model)
    console.print(f"loaded {model} in {time.perf_counter() - t0:.1f}s")
    progress = make_progress(eta=True, console=console)
    task = None

    def on_event(event) -> None:
        nonlocal task
        if isinstance(event, compress_lib.CompressStarted):
            b = event.plan_bpw
            console.print(f"plan {the_plan.preset} hash {event.plan_hash[:16]}  bpw {b.bpw_compressed_only:.3f} "
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

    try:
        report = compress_lib.compress_model(model_obj, the_plan, the_store, calib_config, executor=executor,
                                             progress=on_event, tokenizer=tokenizer, model_ref=models.model_identity(model),
                                             num_cpus=num_cpus)
    finally:
        progress.stop()
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
    artifacts: str = typer.Option(None, help="profile the modules stored in this artifact store (local dir or fsspec "
                                  "URL, e.g. from `calderalab compress`) instead of compressing each layer here; "
                                  "--bits, --rank and --calib are then taken from / not needed by the store"),
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
    store = None
    if artifacts is not None:  # read the store before the model loads, so a bad URL fails at once
        from calderalab.artifacts import ArtifactStore, assemble_weights
        from calderalab.artifacts.apply import check_fingerprints, select_entries

        store = ArtifactStore(artifacts)
        manifest = store.manifest()
        spec = _stored_spec(manifest, artifacts)
        rank = spec.rank
    else:
        spec = CompressionSpec(method="caldera" if rank > 0 else "ldlq", bits=bits, rank=rank, seed=job.seed)
    clock = _StageClock()
    net, tok = load_model(model)
    clock.done("load model")
    n_layers = num_layers(net)
    job.groups.ranges(n_layers)  # a model too shallow for the group table fails now, not after the runs
    chosen = parse_layer_set(layers, n_layers) if layers else None
    prompts = probe_prompt_ids(tok, job.n_samples, job.seed)
    settings = {"model": model, "spec": spec.to_dict(), "spec_key": spec.key()}
    if store is not None:
        # Stored modules: each layer's Ŵ comes from the store (checksummed, fingerprint-checked
        # against this model), so the profile describes exactly the artifacts that will be deployed.
        # Coverage and fingerprints are checked for every profiled layer before any work starts.
        check_fingerprints(net, select_entries(manifest, n_layers, layers=chosen), artifacts)
        settings["artifacts"] = artifacts
        compress = None
        layer_weights = lambda layer: assemble_weights(store, net, layers=[layer])  # noqa: E731
        calib_batches = None
    else:
        calib_batches, calib_description = _sensitivity_calibration(net, tok, prompts, job)
        clock.done("calibration data")
        settings.update(calib_source=job.calib_source, calib=calib_description)
        compress = lambda W, H: decompose(W, H, spec).reconstruct()  # noqa: E731
        layer_weights = None
    with _progress() as bar:
        task = bar.add_task("layers", total=len(chosen) if chosen else n_layers)
        profile, zone = run_sensitivity(
            net, prompts, calib_batches, compress, job, chosen, eos_token_id=getattr(tok, "eos_token_id", None),
            settings=settings, progress=lambda done, total: bar.update(task, completed=done), stage=clock.done,
            layer_weights=layer_weights,
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


def _stored_spec(manifest, url: str):
    """The one CompressionSpec of the modules in the manifest of the store at `url`."""
    from calderalab.core import CompressionSpec

    keys = sorted({key for (_, _, key) in manifest.modules})
    if len(keys) != 1:
        raise CalderalabError(
            f"artifact store {url} holds {len(keys)} compression specs ({', '.join(keys) or 'none'}); "
            "`sensitivity --artifacts` needs a store compressed with one spec (e.g. `calderalab compress --bits B --rank K`)"
        )
    return CompressionSpec.from_dict(next(iter(manifest.modules.values())).spec)


def _sensitivity_calibration(net, tok, prompts, job) -> tuple[list, str]:
    """(batches, description) of the calibration text, from calderalab.calib."""
    from calderalab.calib import CalibConfig, load_calibration

    data = load_calibration(net, tok, CalibConfig(source=job.calib_source, n_samples=job.calib_samples,
                                                  seq_len=job.calib_seq_len, seed=job.seed))
    return list(data.batches), data.description


def _progress():
    return make_progress(transient=True)


register(app)


def main() -> None:
    try:
        app()
    except (CalderalabError, ValueError, OSError) as err:  # OSError: unreadable files, permissions, ...
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)
