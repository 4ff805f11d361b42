"""Model and artifact commands: `inspect`, `validate`, `export`, `ppl`."""

from __future__ import annotations

import typer

from calderalab.commands.common import DEVICE_OPTION, DTYPE_OPTION, LOAD_OPTION


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


def validate(
    model: str = typer.Argument(..., help="model reference the artifacts were made from"),
    store: str = typer.Argument(..., help="artifact store directory or URL"),
    min_corr: float = typer.Option(None, "--min-corr", help="fail modules whose weight correlation is below this"),
    no_replacement: bool = typer.Option(False, "--no-replacement", help="skip the single-layer replacement check"),
    no_coherence: bool = typer.Option(False, "--no-coherence", help="skip the coherence check (free text from neutral prompts)"),
    plan: str = typer.Option(None, "--plan", help="plan file choosing among several stored specs"),
) -> None:
    """Check artifacts against MODEL: checksums, fingerprints, weight correlation, single-layer replacement,
    coherence of the compressed model's free text. Exit 1 on failure."""
    from rich.console import Console
    from rich.table import Table

    from calderalab import models, plans
    from calderalab.artifacts.preflight import open_for_model
    from calderalab.artifacts.validate import ValidationConfig, validate_store

    console = Console()
    given = {"min_correlation": min_corr, "replacement_check": (False if no_replacement else None),
             "coherence_check": (False if no_coherence else None)}
    config = ValidationConfig(**{k: v for k, v in given.items() if v is not None})
    the_store = open_for_model(store, model)  # a missing, unreadable or mismatched store fails before the model load
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
    if report.coherence is not None:
        verdict = "[red]INCOHERENT[/red]" if report.coherence.flagged else "[green]coherent[/green]"
        console.print(f"coherence check: {verdict}")
        for line in report.coherence.summary_lines():
            console.print(line, markup=False, highlight=False)
    if not report.passed:
        for line in report.failures():
            console.print(f"[red]FAIL[/red] {line}")
        raise typer.Exit(1)
    console.print("[green]validation passed[/green]")


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
    from calderalab.artifacts import apply_artifacts
    from calderalab.artifacts.preflight import open_for_model

    the_store = open_for_model(store, model)  # a missing, unreadable or mismatched store fails before the model load
    n_layers = models.num_layers(models.load_skeleton(model))
    protected = plans.parse_layer_set(protect, n_layers) if protect else ()
    the_plan = plans.load_plan(plan, n_layers) if plan else None
    model_obj, tokenizer = models.load_model(model)
    apply_artifacts(model_obj, the_store, protect=protected, plan=the_plan)
    provenance = {"source_model": models.model_identity(model), "artifacts": store, "protected_layers": list(protected),
                  "artifact_header": the_store.header().to_dict()}
    path = models.export_checkpoint(model_obj, tokenizer, out, overwrite=overwrite,
                                    extra_files={"calderalab_provenance.json": json.dumps(provenance, indent=1, sort_keys=True)})
    typer.echo(f"exported {n_layers} layers ({len(model_obj.calderalab_applied.applied)} compressed modules) to {path}")


def ppl(
    model: str = typer.Argument(..., help="model reference"),
    data: str = typer.Option(..., "--data", help="text file, e.g. ../shared/data/wikitext-2/test.txt"),
    artifacts: str = typer.Option(None, "--artifacts", help="artifact store to apply first; adds ratio, KL and top-1 vs the original"),
    protect: str = typer.Option(None, "--protect", help="layers kept original when applying artifacts"),
    plan: str = typer.Option(None, "--plan", help="plan file choosing among several stored specs (compress --save-plan)"),
    context: int = typer.Option(None, "--context", help="tokens per window (default 512)"),
    stride: int = typer.Option(None, "--stride", help="window step; each token is scored once (default 256)"),
    max_tokens: int = typer.Option(None, "--max-tokens", help="score only the first N tokens of the text"),
    batch_size: int = typer.Option(None, "--batch-size", help="windows per forward pass (default 4)"),
    reference_cache: str = typer.Option(None, "--reference-cache",
                                        help="where the original model's reference is cached (default $CALDERALAB_CACHE/ppl-reference)"),
    device: str = DEVICE_OPTION,
    dtype: str = DTYPE_OPTION,
    load: str = LOAD_OPTION,
) -> None:
    """Sliding-window perplexity of MODEL on a text file; with --artifacts, also the perplexity ratio,
    KL(original ‖ compressed) per token and top-1 agreement against the original on the same windows."""
    from pathlib import Path

    from calderalab import devices, models
    from calderalab.eval.fidelity import perplexity_lines
    from calderalab.eval.perplexity import token_ids

    if (protect or plan) and not artifacts:
        raise ValueError("--protect and --plan only make sense with --artifacts")
    run_device, run_dtype = devices.resolve(device, dtype)
    load = devices.check_load(load)
    text = Path(data).read_text(encoding="utf-8")
    the_plan = None
    if artifacts:
        from calderalab import plans
        from calderalab.artifacts.apply import select_entries
        from calderalab.artifacts.preflight import open_for_model

        the_store = open_for_model(artifacts, model)  # a missing, unreadable or mismatched store fails before the model load
        n_layers = models.num_layers(models.load_skeleton(model))
        the_plan = plans.load_plan(plan, n_layers) if plan else None
        protected = plans.parse_layer_set(protect, n_layers) if protect else ()
        select_entries(the_store.manifest(), n_layers, protected, None, the_plan)  # several specs and no plan: now
    model_obj, tokenizer = models.open_to_run(model, run_dtype, run_device, load)
    typer.echo(f"{model} on {devices.describe(run_device, run_dtype)}")
    ids = token_ids(tokenizer, text, max_tokens)
    given = {k: v for k, v in {"context_len": context, "stride": stride, "batch_size": batch_size}.items() if v is not None}
    for line in perplexity_lines(model_obj, ids, artifacts, protect, reference_cache, plan=the_plan, **given):
        typer.echo(line)


COMMANDS = {"inspect": inspect, "validate": validate, "export": export, "ppl": ppl}
