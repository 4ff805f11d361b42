"""Analysis commands: `activations` (hidden-state drift per layer, uniform against selective)."""

from __future__ import annotations

from pathlib import Path

import typer

from calderalab.commands.common import DEVICE_OPTION, DTYPE_OPTION, LOAD_OPTION, MODEL_ARG


def activations(
    model: str = MODEL_ARG,
    artifacts: str = typer.Option(..., "--artifacts", help="artifact store dir or URL made from MODEL"),
    protect: str = typer.Option(None, "--protect", help="layers kept original in the selective profile, e.g. 23-29 or last:5"),
    samples: int = typer.Option(None, "--samples", help="probe prompts (default 8)"),
    seed: int = typer.Option(None, "--seed", help="probe instance seed (default 0)"),
    plan: str = typer.Option(None, "--plan", help="plan file choosing among several stored specs"),
    out: str = typer.Option("reports/activations", "--out", help="folder for drift.json, drift.md, drift.png"),
    device: str = DEVICE_OPTION,
    dtype: str = DTYPE_OPTION,
    load: str = LOAD_OPTION,
) -> None:
    """Per decoder layer, how far the compressed model's hidden state is from the original's on
    the probe prompts (cosine, relative norm; answer tokens and all tokens), uniform against selective."""
    from calderalab import devices, models, plans
    from calderalab.artifacts import ArtifactStore
    from calderalab.report.activation_report import drift_table, write_outputs
    from calderalab.sensitivity.activations import ActivationSettings, activation_drift

    run_device, run_dtype = devices.resolve(device, dtype)
    load = devices.check_load(load)
    given = {k: v for k, v in {"n_samples": samples, "seed": seed}.items() if v is not None}
    settings = ActivationSettings(**given)
    store = ArtifactStore(artifacts)
    store.header()  # a missing store, a bad protection set or plan fail before the weights load
    n_layers = models.num_layers(models.load_skeleton(models.resolve_model_ref(model)))
    protected = plans.parse_layer_set(protect, n_layers) if protect else ()
    the_plan = plans.load_plan(plan, n_layers) if plan else None
    model_obj, tokenizer = models.open_to_run(model, run_dtype, run_device, load)
    profiles = activation_drift(model_obj, tokenizer, store, protected, settings, the_plan)
    typer.echo(drift_table(profiles))
    provenance = {"model": models.model_identity(model), "artifacts": artifacts, "protected": list(protected),
                  "n_samples": settings.n_samples, "seed": settings.seed, "max_new_tokens": settings.max_new_tokens}
    paths = write_outputs(profiles, Path(out), provenance)
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))


COMMANDS = {"activations": activations}
