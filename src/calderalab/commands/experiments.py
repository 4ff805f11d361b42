"""The experiment commands (ablate, sweep, min-protect, grid) and the main job (study).

Each builds its settings with `experiments.options` — every option checked before the model
loads — and runs the library's experiment; nothing here decides anything a test needs.
"""

from __future__ import annotations

from typing import Any, Callable

import typer

from calderalab.commands.common import MODEL_ARG, experiment_command, stage_progress


def _run(config: Any, name: str, job: Callable[[Any], Any], extra: dict[str, Any]) -> None:
    """Run one experiment with a progress display, then print its first sections and its files."""
    from rich.console import Console
    from rich.markdown import Markdown

    from calderalab.experiments.protection import run_experiment

    bar, update = stage_progress()
    with bar:
        paths, result = run_experiment(config, name, job, extra, progress=update)
    console = Console()
    for section in result.sections[:2]:
        console.print(Markdown(section.render()))
    for key, path in paths.items():
        console.print(f"{key}: {path}")


@experiment_command()
def ablate(
    model: str = MODEL_ARG,
    protect_layers: list[str] = typer.Option(..., "--protect-layers", help="a protection set, repeatable: 23,24,25,26,27 or last:3"),
    *, options: dict[str, Any],
) -> None:
    """Baseline vs uniform vs uniform with each protection set (report Experiments 1–2), from artifacts."""
    from calderalab import experiments
    from calderalab.experiments.options import check_layer_sets, study_config

    config = study_config(model=model, **options)
    check_layer_sets(model, protect_layers)
    _run(config, "ablate", lambda s: experiments.ablate(s, protect_layers), {"protect_layers": protect_layers})


@experiment_command()
def sweep(
    model: str = MODEL_ARG,
    protect: str = typer.Option(None, "--protect", help="protection sets separated by ';' or tail specs by ',' "
                                "(default last:10,last:5,last:3,last:1)"),
    *, options: dict[str, Any],
) -> None:
    """Protection sweep (the report's 72B sweep table, per-test grid, execution vs protected plot)."""
    from calderalab import experiments
    from calderalab.experiments.options import check_layer_sets, protection_sets, study_config

    config = study_config(model=model, **options)
    sets = protection_sets(protect)
    check_layer_sets(model, sets)
    _run(config, "sweep", lambda s: experiments.sweep(s, sets), {"protect": sets})


@experiment_command(exclude=("generate_canonical",))
def min_protect(
    model: str = MODEL_ARG,
    margin: float = typer.Option(None, "--margin", help="non-inferiority margin: largest execution drop vs baseline "
                                 "to rule out, as a rate (default 0.05 = 5 points)"),
    *, options: dict[str, Any],
) -> None:
    """Smallest protected tail whose execution is non-inferior to the baseline (one-sided 95% upper bound of the paired drop below --margin; binary search)."""
    from calderalab import experiments
    from calderalab.experiments.options import study_config
    from calderalab.search import MarginTest

    test = MarginTest() if margin is None else MarginTest(margin=margin)
    config = study_config(model=model, generate_canonical=False, **options)
    _run(config, "min-protect", lambda s: experiments.min_protect(s, test.margin),
         {"margin": test.margin, "level": test.level})


@experiment_command(exclude=("bits",))
def grid(
    model: str = MODEL_ARG,
    bits: str = typer.Option(None, "--bits", help="bit widths b_Q, comma-separated, 2..8 (default 2,3,4); a "
                             "fractional one such as 2.5 mixes its two neighbours up to that honest bpw"),
    plans: str = typer.Option(None, "--plans", help="uniform and/or selective (default both)"),
    protect: str = typer.Option(None, "--protect", help="selective's protected layers (default: the critical group by depth)"),
    profile: str = typer.Option(None, "--profile", help="a sensitivity profile.json: fractional widths raise the layers "
                                "the budget allocator picks from it (default: the v/down, first/last-layers rule)"),
    *, options: dict[str, Any],
) -> None:
    """Bits x plans against the baseline: bitwidth tables with honest bpw (mean ± std over seeds) and execution vs bpw."""
    from calderalab import experiments
    from calderalab.experiments.options import check_grid_model, check_layer_sets, grid_options, study_config
    from calderalab.fractional import bits_label

    config = study_config(model=model, **options)
    given = grid_options(config, bits, plans)
    check_layer_sets(model, [protect] if protect else [])
    loaded = check_grid_model(model, config, given.get("bits", ()), profile)
    extra = {**given, "protect": protect, "profile": profile}
    if "bits" in given:  # exact fractions, written as typed
        extra["bits"] = [bits_label(b) for b in given["bits"]]
    _run(config, "grid", lambda s: experiments.grid(s, protect=protect, profile=loaded, **given), extra)


@experiment_command()
def study(
    model: str = typer.Option(None, "--model", help="model reference (default smollm2, the embedded SmolLM2-135M-Instruct)"),
    samples: int = typer.Option(None, "--samples", help="sensitivity probe samples N (default 24)"),
    threshold: float = typer.Option(None, "--threshold", help="critical-zone fidelity threshold (default 0.15)"),
    ultra: bool = typer.Option(None, "--ultra/--no-ultra", help="also evaluate the ultra rank plan when a critical zone is measured (default on)"),
    budget_bpw: float = typer.Option(None, "--budget-bpw", help="also evaluate the budget plan at this bpw (bits and rank per layer from the profile)"),
    *, options: dict[str, Any],
) -> None:
    """The main job: sensitivity profile -> critical zone -> uniform / selective / ultra -> Goodhart Gap report."""
    from rich.console import Console
    from rich.markdown import Markdown

    from calderalab.experiments import study as run_study
    from calderalab.experiments.options import study_config

    config = study_config(model=model, samples=samples, threshold=threshold, ultra=ultra,
                          budget_bpw=budget_bpw, **options)
    bar, update = stage_progress()
    with bar:
        result = run_study(config, progress=update)
    console = Console()
    console.print(Markdown(result.summary))
    for name, path in result.paths.items():
        console.print(f"{name}: {path}")


COMMANDS = {"ablate": ablate, "sweep": sweep, "min-protect": min_protect, "grid": grid, "study": study}
