"""Command-line values turned into settings, checked before any model loads.

The commands pass None for every option the user did not give; `study_config` merges the rest
into the settings dataclasses, so each default lives in its dataclass only. Parsing a list option
(seeds, bit widths, protection sets) happens here, once, with an error that names the option.
"""

from __future__ import annotations

from typing import Any, Sequence

from calderalab.experiments.config import StudyConfig, merged

SWEEP_SETS = ("last:10", "last:5", "last:3", "last:1")  # the report's sweep of protected tails


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    """"0,1,2" -> (0, 1, 2); anything else is a ValueError naming `option`."""
    try:
        values = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"{option} must be comma-separated integers like 0,1,2, got {text!r}") from None
    if not values:
        raise ValueError(f"{option} is empty: give comma-separated integers like 0,1,2")
    return values


def parse_seeds(text: str | None) -> tuple[int, ...] | None:
    """The --seeds option (None: the settings' default seeds)."""
    return None if text is None else parse_ints(text, "--seeds")


def protection_sets(text: str | None) -> list[str]:
    """The --protect option of `sweep`: sets separated by ';' (each may hold commas, e.g. "23,24;last:3"),
    or, without ';', comma-separated tail specs ("last:10,last:5"). None: the report's sweep."""
    if text is None:
        return list(SWEEP_SETS)
    sets = [p.strip() for p in (text.split(";") if ";" in text else text.split(",")) if p.strip()]
    if not sets:
        raise ValueError("--protect names no protection set: give e.g. 'last:5,last:3' or '23,24;last:3'")
    return sets


def check_layer_sets(model: str, sets: Sequence[str]) -> None:
    """Parse every layer set against the model's structure (meta device, no weights read), so that a
    bad set fails before the model loads and before any compression."""
    from calderalab.models import load_skeleton, num_layers
    from calderalab.plans import parse_layer_set

    if sets:
        n_layers = num_layers(load_skeleton(model))
        for text in sets:
            parse_layer_set(text, n_layers)


def study_config(model: str | None = None, out: str | None = None, artifacts: str | None = None, db: str | None = None,
                 device: str | None = None, dtype: str | None = None, load: str | None = None, bits: int | None = None, rank: int | None = None,
                 outer_iters: int | None = None, inner_iters: int | None = None, calib: str | None = None,
                 scoring: str | None = None, n_per_family: int | None = None, seeds: str | None = None,
                 generate_canonical: bool | None = None, samples: int | None = None, threshold: float | None = None,
                 ultra: bool | None = None, budget_bpw: float | None = None) -> StudyConfig:
    """The study's (and every experiment's) settings from command-line options; None keeps the default.

    Every value is validated here (the settings' own checks), before anything is loaded.
    """
    base = StudyConfig()
    evals = merged(base.eval, n=n_per_family, seeds=parse_seeds(seeds), generate_canonical=generate_canonical,
                   decoding=merged(base.eval.decoding, scoring=scoring))
    return merged(
        base,
        run=merged(base.run, model=model, out=out, artifacts=artifacts, db=db, device=device, dtype=dtype, load=load),
        compress=base.compress.with_options(bits=bits, rank=rank, outer_iters=outer_iters, inner_iters=inner_iters,
                                           calib_source=calib),
        sensitivity=merged(base.sensitivity, n_samples=samples, threshold=threshold),
        eval=evals,
        ultra=ultra,
        budget_bpw=budget_bpw,
    )


def grid_options(config: StudyConfig, bits: str | None, plans: str | None) -> dict[str, Any]:
    """`grid`'s --bits and --plans as keyword arguments of experiments.grid (absent: its defaults). Bit
    widths are parsed once (`fractional.parse_bit_widths`: 2..8, fractional allowed) and each whole
    width a plan will use is checked as the spec the grid will compress with."""
    from calderalab.experiments.protection import check_grid_plans
    from calderalab.fractional import neighbours, parse_bit_widths

    given: dict[str, Any] = {}
    if bits is not None:
        given["bits"] = parse_bit_widths(bits, "--bits")
        for b in given["bits"]:
            for whole in sorted(set(neighbours(b))):
                config.compress.spec(whole)
    if plans is not None:
        given["plans"] = check_grid_plans([p.strip() for p in plans.split(",") if p.strip()])
    return given


def check_grid_model(model: str, config: StudyConfig, bits: Sequence[Any], profile: str | None) -> Any:
    """On the model's structure (meta device, no weights read): refuse a fractional bit width below the
    honest bpw of its lower neighbour, and a profile that does not cover this model. Returns the loaded
    profile (None without one)."""
    from calderalab.budget import check_profile, load_profile
    from calderalab.fractional import check_floor, is_fractional, neighbours
    from calderalab.models import load_skeleton, module_shapes

    fractional = [b for b in bits if is_fractional(b)]
    if not fractional and profile is None:
        return None
    shapes = module_shapes(load_skeleton(model))
    for b in fractional:
        check_floor(config.compress.spec(neighbours(b)[0]), b, shapes)
    if profile is None:
        return None
    loaded = load_profile(profile)
    check_profile(loaded, shapes)
    return loaded


def eval_job(model: str, suite: str | None = None, canonical: bool = False, ladder: bool = False, n: int | None = None,
             seeds: str | None = None, scoring: str | None = None, batch_size: int | None = None,
             data: str | None = None, tasks_dirs: Sequence[str] = (), artifacts: str | None = None,
             protect: str | None = None, label: str | None = None, experiment: str | None = None,
             device: str | None = None, dtype: str | None = None, load: str | None = None) -> Any:
    """`calderalab eval`'s job from its options (--canonical and --ladder are shorthands for --suite)."""
    from calderalab.eval.suite import EvalSettings
    from calderalab.experiments.evaluation import EvalJob

    if sum([canonical, ladder, suite is not None]) > 1:
        raise ValueError("pick one of --canonical, --ladder and --suite")
    chosen = "canonical" if canonical else "ladder" if ladder else suite
    base = EvalSettings()
    settings = merged(base, suite=chosen, n=n, seeds=parse_seeds(seeds), data_path=data, tasks_dirs=tuple(tasks_dirs) or None,
                      decoding=merged(base.decoding, scoring=scoring, batch_size=batch_size))
    return merged(EvalJob(model_ref=model, settings=settings), artifacts=artifacts, protect=protect, label=label,
                  experiment=experiment, device=device, dtype=dtype, load=load)
