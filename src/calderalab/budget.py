"""The `budget` plan preset: bits and rank per layer under a target bpw, from a sensitivity profile.

1. Options per layer: the profiled spec and the profiled spec at every (bits b, rank k) of the
   grid (method by `plans.spec_with`: CALDERA when k > 0, else LDLQ), plus "none" (the layer kept
   original: 16 bits per weight, as in an fp16 checkpoint).
2. Errors: every candidate spec is compressed into the artifact store (resumable: each
   (layer, module, spec) is decomposed once, ever, and the chosen plan then costs nothing more);
   e_lo = layer l's parameter-weighted mean relative Hessian-weighted error under option o.
3. Loss: `allocation.predicted_losses`, s_l · (e_lo / e_l,profiled)², where s_l is layer l's
   measured KL excess over the noise floor at the profiled spec.
4. Bits: exact, `core.expected_bpw` per module (every stored bit, scales and seeds included).
5. `allocation.budget_allocation` (an exact knapsack) picks one option per layer with summed bits
   <= target_bpw x target parameters.
No printing; compression is the caller's (a `compress(plan)` callback), so the CLI and the study
share this code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from calderalab import core
from calderalab.allocation import Allocation, Option, budget_allocation, equal_budget_alternatives, predicted_losses
from calderalab.errors import PlanError
from calderalab.plans import Plan, PlanBpw, plan_bpw, spec_with, uniform_plan
from calderalab.sensitivity.profile import SensitivityProfile

ModuleShapes = Mapping[tuple[int, str], tuple[int, int]]  # (layer, module) -> (d_out, d_in)
PROTECT = "none"
PROTECTED_BITS = 16  # per weight of a layer kept original (fp16 / bf16 checkpoint)


@dataclass(frozen=True)
class BudgetSettings:
    """target_bpw: the plan's bpw with protected layers counted as 16 (`PlanBpw.bpw_fp16`).
    bits, ranks: the option grid (ranks None: 0 and the profiled spec's rank). protect: offer
    "none" (the layer kept original) as an option. Each grid point costs one compression of the
    model the first time (SmolLM2 on 2 CPU cores: ~2-3 min at rank 32, well under one at rank 0)."""

    target_bpw: float
    bits: tuple[int, ...] = (2, 3, 4)
    ranks: tuple[int, ...] | None = None
    protect: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target_bpw) and self.target_bpw > 0):
            raise ValueError(f"--bpw must be a positive number of bits per weight, got {self.target_bpw}")
        if not self.bits or any(not 2 <= b <= 8 for b in self.bits):
            raise ValueError(f"budget bits must be in 2..8, got {list(self.bits)}")
        if self.ranks is not None and (not self.ranks or any(k < 0 for k in self.ranks)):
            raise ValueError(f"budget ranks must be >= 0, got {list(self.ranks)}")


@dataclass(frozen=True)
class BudgetPlan:
    plan: Plan
    choice: tuple[str, ...]  # the option name of every layer, e.g. "3b-r32" or "none"
    bpw: PlanBpw  # honest: core.expected_bpw of every module, protected as 16
    allocation: Allocation
    uniform: Allocation | None  # the best single option on every layer within the same budget


def option_name(spec: Any) -> str:
    return PROTECT if spec is None else f"{spec.bits}b-r{spec.rank}"


def profiled_spec(profile: SensitivityProfile) -> Any:
    """The spec the profile measured (its settings record it)."""
    if "spec" not in profile.settings:
        raise PlanError("the profile records no compression spec (made from published values?): "
                        "measure one with `calderalab sensitivity MODEL --out DIR`")
    return core.CompressionSpec.from_dict(profile.settings["spec"])


def candidate_specs(base: Any, settings: BudgetSettings) -> dict[str, Any]:
    """Option name -> spec: the profiled spec `base` first, then the grid (duplicates dropped)."""
    ranks = settings.ranks if settings.ranks is not None else tuple(sorted({0, base.rank}))
    out = {option_name(base): base}
    for b in settings.bits:
        for k in ranks:
            spec = spec_with(base, bits=b, rank=k)
            out.setdefault(option_name(spec), spec)
    return out


def layer_bits(spec: Any, shapes: ModuleShapes, layer: int) -> float:
    """Every stored bit of one layer under `spec` (None: kept original, 16 per weight)."""
    return sum((PROTECTED_BITS if spec is None else core.expected_bpw(spec, *shape)) * shape[0] * shape[1]
               for (l, _), shape in shapes.items() if l == layer)


def check_budget(profile: SensitivityProfile, settings: BudgetSettings, shapes: ModuleShapes) -> dict[str, Any]:
    """The candidate specs, after checking (no weights needed) that the profile covers this model and
    the cheapest choice fits the target; every refusal names the fix."""
    check_profile(profile, shapes)
    specs = candidate_specs(profiled_spec(profile), settings)
    check_target(specs, settings.target_bpw, shapes)
    return specs


def check_profile(profile: SensitivityProfile, shapes: ModuleShapes) -> None:
    """Refuse a profile that does not cover every layer of this model with a measured KL."""
    n_layers = 1 + max(l for l, _ in shapes)
    if profile.n_layers != n_layers or profile.layers != tuple(range(n_layers)):
        raise PlanError(f"the profile covers layers {list(profile.layers)} of {profile.n_layers}, the model has "
                        f"{n_layers}: profile every layer of this model (`calderalab sensitivity` without --layers)")
    if any(r.kl_excess is None for r in profile.rows):
        raise PlanError("the profile has no KL per layer (made from published values?): measure one with "
                        "`calderalab sensitivity`")


def check_target(specs: Mapping[str, Any], target_bpw: float, shapes: ModuleShapes) -> None:
    """Refuse a target below the cheapest choice of these specs on every layer (exact bits, no weights)."""
    n_layers = 1 + max(l for l, _ in shapes)
    total = sum(n[0] * n[1] for n in shapes.values())
    floor = sum(min(layer_bits(s, shapes, l) for s in specs.values()) for l in range(n_layers)) / total
    if floor > target_bpw:
        cheapest = min(specs, key=lambda name: layer_bits(specs[name], shapes, 0))
        raise PlanError(f"--bpw {target_bpw:g} is below the cheapest plan of these options: {floor:.3f} bpw "
                        f"({cheapest} on every layer); raise --bpw or allow fewer bits")


def layer_errors(modules: Sequence[Any]) -> dict[int, float]:
    """Layer -> parameter-weighted mean relative error of its modules (a CompressReport's modules)."""
    sums: dict[int, list[float]] = {}
    for m in modules:
        if m.relative_error is None:
            raise PlanError(f"module {m.layer}.{m.module} has no relative error (compressed without a Hessian)")
        acc = sums.setdefault(m.layer, [0.0, 0.0])
        acc[0] += m.relative_error * m.n_params
        acc[1] += m.n_params
    return {layer: e / n for layer, (e, n) in sums.items()}


def budget_plan(profile: SensitivityProfile, settings: BudgetSettings, shapes: ModuleShapes,
                compress: Callable[[Plan], Any]) -> BudgetPlan:
    """Compress the candidates (`compress(plan)` returns a CompressReport), predict each option's loss
    from the profile and choose one option per layer with the exact knapsack (module docstring)."""
    specs = check_budget(profile, settings, shapes)
    n_layers = profile.n_layers
    errors = {name: layer_errors(compress(uniform_plan(n_layers, spec)).modules) for name, spec in specs.items()}
    reference = option_name(profiled_spec(profile))
    names = list(specs) + ([PROTECT] if settings.protect else [])
    per_option = {l: [0.0 if n == PROTECT else errors[n][l] for n in names] for l in range(n_layers)}
    losses = predicted_losses({r.layer: float(r.kl_excess) for r in profile.rows}, errors[reference], per_option)
    options = [[Option(n, layer_bits(specs.get(n), shapes, l), losses[l][j]) for j, n in enumerate(names)]
               for l in range(n_layers)]
    budget_bits = settings.target_bpw * sum(n[0] * n[1] for n in shapes.values())
    allocation = budget_allocation(options, budget_bits)
    uniform = equal_budget_alternatives(options, budget_bits, reference, PROTECT if settings.protect else reference).get("uniform")
    entries = tuple(((l, m), specs.get(allocation.names[l])) for l in range(n_layers) for m in core.MODULE_NAMES)
    plan = Plan(n_layers, entries, "budget")
    return BudgetPlan(plan, allocation.names, plan_bpw(plan, shapes), allocation, uniform)


# ------------------------------------------------------------------ options and printing


def parse_ints(text: str | None, option: str) -> tuple[int, ...] | None:
    """"2,3,4" -> (2, 3, 4); None stays None."""
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{option} takes comma-separated integers like 2,3,4, got {text!r}") from None


def load_profile(path: str | Path) -> SensitivityProfile:
    """A profile.json of `calderalab sensitivity`, or a one-line error naming the fix."""
    path = Path(path)
    if not path.is_file():
        raise PlanError(f"profile file {path} not found: make one with `calderalab sensitivity MODEL --out DIR` "
                        "(it writes DIR/profile.json)")
    try:
        return SensitivityProfile.load(path)
    except (ValueError, KeyError, TypeError) as err:
        raise PlanError(f"{path} is not a sensitivity profile ({err}): pass the profile.json of `calderalab sensitivity`") from err


def layer_runs(choice: Sequence[str]) -> list[tuple[range, str]]:
    """Consecutive layers with the same option: [(range(0, 6), "3b-r32"), (range(6, 7), "none"), ...]."""
    runs: list[tuple[range, str]] = []
    for layer, name in enumerate(choice):
        if runs and runs[-1][1] == name:
            runs[-1] = (range(runs[-1][0].start, layer + 1), name)
        else:
            runs.append((range(layer, layer + 1), name))
    return runs


def map_table(chosen: BudgetPlan) -> str:
    """The chosen map as a Markdown table: Layers | Option."""
    rows = [f"| {r.start if len(r) == 1 else f'{r.start}-{r.stop - 1}'} | {name} |" for r, name in layer_runs(chosen.choice)]
    return "\n".join(["| Layers | Option |", "|--------|--------|", *rows])


def summary_line(chosen: BudgetPlan, settings: BudgetSettings) -> str:
    """The honest bpw against the target, and the predicted loss against the best uniform option."""
    b = chosen.bpw
    line = (f"budget plan: {b.bpw_fp16:.3f} bpw (target {settings.target_bpw:g}; every stored bit counted, kept layers "
            f"as 16), {b.bpw_compressed_only:.3f} over compressed modules; predicted loss {chosen.allocation.total_loss:.4g}")
    if chosen.uniform is not None:
        line += f" (uniform {chosen.uniform.names[0]} within the budget: {chosen.uniform.total_loss:.4g})"
    return line
