"""Fractional bit widths (2.5, 3.5): plans that mix two Q bit widths so that the honest average bpw
comes as close to a non-integer target as the module sizes allow, without exceeding it.

Owns parsing a grid's bit widths (the one place: `parse_bit_widths`), the mixed plan, and the two
orders that decide which modules get the extra bit. Imports core, plans, allocation and budget (the
last two on use); never transformers.

A bit width b in 2..8: an integer is the uniform spec at b bits, as before. A fractional b mixes
lo = the spec at floor(b) bits and hi = the spec at ceil(b) bits (every other field equal), module
by module: every module starts at lo, and modules are raised to hi one at a time in a priority order
whenever the plan's stored bits (`core.module_bits`: codes, scales, factors, seeds, as exact
integers) stay within b x parameters. A module that does not fit is skipped and the next one tried,
so the plan never exceeds b, and falls short of it by less than the extra bits of the smallest module
left at lo: within one module's step.

The target is the honest bpw, so b itself pays for scales and factors: with rank-32 CALDERA, 2-bit
uniform already stores about 2.42 bpw on SmolLM2 (rank 0: 2.05), so a 2.5 target raises fewer modules than on a
rank-0 grid. A target below lo's own honest bpw is refused, naming that bpw.

Which modules first:
- `rule_order` (no profile): the k-quant mixes of llama.cpp (src/llama-quant.cpp, Q3_K_M / Q4_K_M)
  give the attention value and MLP down projections the extra bits first, and among layers first
  those `use_more_bits` picks (the first and last eighth of the stack, every third layer between);
  ties by layer index, then MODULE_NAMES order.
- `profile_order` (a sensitivity profile): the budget allocator (`allocation.budget_allocation`, the
  exact knapsack of the `budget` preset) raises whole layers, each layer's loss at lo and at hi
  predicted from the profile (`allocation.predicted_losses` on the measured errors of lo, hi and the
  profiled spec); the bits it leaves go module by module to the other layers, most KL first.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Any, Callable, Mapping, Sequence

from calderalab import core
from calderalab.errors import PlanError
from calderalab.plans import ModuleKey, Plan, uniform_plan

ModuleShapes = Mapping[ModuleKey, tuple[int, int]]  # (layer, module) -> (d_out, d_in)
MIN_BITS, MAX_BITS = 2, 8  # CompressionSpec's range of b_Q
EXTRA_FIRST = ("v", "down")  # llama.cpp's k-quant mixes promote attn_v and ffn_down
MIXED = "mixed"


def parse_bit_widths(text: str, option: str = "--bits") -> tuple[Fraction, ...]:
    """"2,2.5,3" -> (2, 5/2, 3) as exact fractions; each in 2..8, no repeats; else ValueError naming it."""
    tokens = [t.strip() for t in text.split(",") if t.strip()]
    if not tokens:
        raise ValueError(f"{option} is empty: give bit widths like 2,2.5,3")
    values: list[Fraction] = []
    for token in tokens:
        try:
            b = Fraction(token)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{option}: {token!r} is not a number; give bit widths like 2,2.5,3") from None
        if not MIN_BITS <= b <= MAX_BITS:
            raise ValueError(f"{option}: {token} is outside {MIN_BITS}..{MAX_BITS} (b_Q is 2 to 8 bits; a fractional "
                             "value mixes the two whole bit widths around it)")
        if b in values:
            raise ValueError(f"{option}: {token} is given twice")
        values.append(b)
    return tuple(values)


def bits_label(b: Fraction | int) -> str:
    """3 -> "3", 5/2 -> "2.5": the bit width as the user wrote it."""
    b = Fraction(b)
    return str(b.numerator) if b.denominator == 1 else f"{float(b):g}"


def is_fractional(b: Fraction | int) -> bool:
    return Fraction(b).denominator != 1


def neighbours(b: Fraction) -> tuple[int, int]:
    """The whole bit widths a fractional b mixes: (floor, ceil)."""
    return math.floor(b), math.ceil(b)


def use_more_bits(layer: int, n_layers: int) -> bool:
    """llama.cpp's layer rule: the first and last eighth of the layers and every third layer between."""
    eighth = n_layers // 8
    return layer < eighth or layer >= 7 * n_layers // 8 or (layer - eighth) % 3 == 2


def layer_order(layer: int) -> tuple[ModuleKey, ...]:
    """One layer's modules, v and down first, then MODULE_NAMES order."""
    names = [n for n in EXTRA_FIRST] + [n for n in core.MODULE_NAMES if n not in EXTRA_FIRST]
    return tuple((layer, n) for n in names)


def rule_order(n_layers: int) -> tuple[ModuleKey, ...]:
    """Every module, in the order the rule raises them (module docstring)."""
    position = {n: i for i, n in enumerate(core.MODULE_NAMES)}
    keys = [(l, n) for l in range(n_layers) for n in core.MODULE_NAMES]
    return tuple(sorted(keys, key=lambda k: (k[1] not in EXTRA_FIRST, not use_more_bits(k[0], n_layers), k[0], position[k[1]])))


def _n_params(shapes: ModuleShapes) -> int:
    return sum(d_out * d_in for d_out, d_in in shapes.values())


def check_floor(lo: Any, target: Fraction, shapes: ModuleShapes) -> int:
    """lo's stored bits on every module (exact), after refusing a target below them."""
    floor = sum(core.module_bits(lo, *shape) for shape in shapes.values())
    if floor > target * _n_params(shapes):
        raise PlanError(f"--bits {bits_label(target)} is below {lo.bits}-bit uniform's own honest bpw, "
                        f"{floor / _n_params(shapes):.3f} (scales{', factors' if lo.rank else ''} and seeds counted): "
                        f"raise it, or use {lo.bits}")
    return floor


def mixed_plan(lo: Any, hi: Any, target: Fraction, shapes: ModuleShapes, order: Sequence[ModuleKey]) -> Plan:
    """lo everywhere, then hi on each module of `order` whose extra bits still fit b x parameters.

    Honest bits (stored, exact): floor + the raised modules' extra <= target x n_params, and every
    module left at lo would overflow it (module docstring). Deterministic: a function of its inputs.
    """
    if dataclasses.replace(lo, bits=hi.bits) != hi or hi.bits <= lo.bits:
        raise ValueError(f"a mixed plan needs two specs that differ only in more bits, got {lo} and {hi}")
    if sorted(order) != sorted(shapes) or len(set(order)) != len(order):
        raise ValueError("the order must name every module of the model exactly once")
    used = check_floor(lo, target, shapes)
    budget_bits = target * _n_params(shapes)
    raised = set()
    for key in order:
        extra = core.module_bits(hi, *shapes[key]) - core.module_bits(lo, *shapes[key])
        if used + extra <= budget_bits:
            raised.add(key)
            used += extra
    n_layers = 1 + max(l for l, _ in shapes)
    entries = tuple(((l, n), hi if (l, n) in raised else lo) for l in range(n_layers) for n in core.MODULE_NAMES)
    return Plan(n_layers, entries, MIXED)


def stored_bits(plan: Plan, shapes: ModuleShapes) -> int:
    """Every stored bit of a plan without protected modules, as an exact integer."""
    if any(spec is None for _, spec in plan.items()):
        raise ValueError("stored_bits counts compressed plans only; plans.plan_bpw counts protected modules")
    return sum(core.module_bits(spec, *shapes[key]) for key, spec in plan.items())


def knapsack_order(kl: Mapping[int, float], errors: Mapping[str, Mapping[int, float]], lo: Any, hi: Any,
                   target: Fraction, shapes: ModuleShapes) -> tuple[ModuleKey, ...]:
    """The profile's order: the layers the exact knapsack raises, then the rest by decreasing KL.

    kl: layer -> KL excess measured at the profiled spec; errors: "reference" / "lo" / "hi" -> layer ->
    relative error (parameter-weighted over the layer's modules).
    """
    from calderalab.allocation import Option, budget_allocation, predicted_losses
    from calderalab.budget import layer_bits

    check_floor(lo, target, shapes)
    n_layers = 1 + max(l for l, _ in shapes)
    per_option = {l: [errors["lo"][l], errors["hi"][l]] for l in range(n_layers)}
    losses = predicted_losses(kl, errors["reference"], per_option)
    options = [[Option(f"{s.bits}b", layer_bits(s, shapes, l), losses[l][j]) for j, s in enumerate((lo, hi))]
               for l in range(n_layers)]
    # float bits inside the solver; mixed_plan re-checks every module in exact integers
    allocation = budget_allocation(options, float(target * _n_params(shapes)))
    raised = [l for l in range(n_layers) if allocation.choice[l] == 1]
    rest = sorted(set(range(n_layers)) - set(raised), key=lambda l: (-kl[l], l))
    return tuple(key for l in raised + rest for key in layer_order(l))


def profile_order(profile: Any, lo: Any, hi: Any, target: Fraction, shapes: ModuleShapes,
                  compress: Callable[[Plan], Any]) -> tuple[ModuleKey, ...]:
    """`knapsack_order` from a sensitivity profile; `compress(plan)` (returning a CompressReport)
    stores the uniform lo, hi and profiled-spec plans whose errors it needs (resumable)."""
    from calderalab.budget import check_profile, layer_errors, profiled_spec

    check_profile(profile, shapes)
    check_floor(lo, target, shapes)
    n_layers = profile.n_layers
    specs = {"reference": profiled_spec(profile), "lo": lo, "hi": hi}
    measured: dict[Any, dict[int, float]] = {}
    for spec in specs.values():
        if spec not in measured:
            measured[spec] = layer_errors(compress(uniform_plan(n_layers, spec)).modules)
    errors = {name: measured[spec] for name, spec in specs.items()}
    kl = {r.layer: float(r.kl_excess) for r in profile.rows}
    return knapsack_order(kl, errors, lo, hi, target, shapes)


def with_protected(plan: Plan, layers: Sequence[int]) -> Plan:
    """`plan` with every module of `layers` kept original (the selective form of any plan)."""
    kept = set(layers)
    return Plan(plan.n_layers, tuple((key, None if key[0] in kept else spec) for key, spec in plan.items()), "selective")
