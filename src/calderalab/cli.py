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
