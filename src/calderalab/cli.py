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
