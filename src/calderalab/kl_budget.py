"""The KL plan (`compress --plan kl --bpw B`): a bit width for every module, chosen to minimise the
predicted KL(original ‖ compressed) per token under a bpw target.

Each candidate spec (LDLQ at each of `bits`, the E8P lattice where it has a codebook, the scalar grid
above) is compressed once, uniformly; its measured relative error on module m gives
tr(ΔW H ΔWᵀ) = relative_error² · tr(W H Wᵀ), and the module's output sensitivity
(`calib.fisher.output_sensitivity`) turns that into nats per token. One option per (module, spec),
its honest stored bits (`core.module_bits`) and its predicted KL, go to the exact multiple-choice
knapsack of the `budget` preset (`allocation.budget_allocation`, HiGHS): per module, where the
`budget` preset works per layer from a sensitivity profile of one spec.

Why per module: on SmolLM2 at 4 bits the attention value projections are 3% of the weights and a
sixth of the measured KL (README, "Bits where the KL is"). The predictor's level is off by a factor
(measured 1.3x predicted on uniform stores, 0.8-1.7x by module type); the knapsack needs its order.

Imports core, plans, allocation and calib.fisher (for its config; it imports torch); models only inside the
functions that need the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from calderalab import core
from calderalab.calib.fisher import FisherConfig
from calderalab.errors import PlanError
from calderalab.plans import ModuleKey, Plan, uniform_plan

ModuleShapes = Mapping[ModuleKey, tuple[int, int]]
KL_PRESET = "kl"
DEFAULT_BITS = (2, 3, 4, 5, 6, 8)


@dataclass(frozen=True)
class KLBudgetSettings:
    """bpw: the target (every stored bit counted, as `core.module_bits` does). bits: the LDLQ bit widths
    each module may take. codebook: "e8p" = the E8P lattice at 2, 3, 4 bits and the scalar row grid
    above; "scalar" = the grid everywhere. seed: the candidates' rotation seed (CompressionSpec.seed).
    fisher: how the output sensitivity is measured."""

    bpw: float
    bits: tuple[int, ...] = DEFAULT_BITS
    codebook: str = "e8p"
    seed: int = 0
    fisher: FisherConfig = field(default_factory=FisherConfig)

    def __post_init__(self) -> None:
        if isinstance(self.bpw, bool) or not isinstance(self.bpw, (int, float)) or not 2 <= self.bpw <= 16:
            raise ValueError(f"--bpw {self.bpw!r}: give the target bits per weight, 2 to 16")
        if not self.bits or len(set(self.bits)) != len(self.bits):
            raise ValueError(f"--budget-bits {self.bits!r}: give distinct bit widths, e.g. 2,3,4,5,6,8")
        if any(isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 8 for b in self.bits):
            raise ValueError(f"--budget-bits {self.bits!r}: every bit width must be an integer in 2..8")
        if self.codebook not in ("e8p", "scalar"):
            raise ValueError(f"--codebook {self.codebook!r}: the KL plan takes e8p or scalar")


def candidate_specs(settings: KLBudgetSettings) -> dict[str, Any]:
    """{"4b-e8p": spec, "5b": spec, ...}: LDLQ at each bit width, in increasing bits."""
    from calderalab.core.e8p_matrix import BITS as E8P_BITS

    specs = {}
    for b in sorted(settings.bits):
        book = "e8p" if settings.codebook == "e8p" and b in E8P_BITS else "scalar"
        specs[f"{b}b{'-e8p' if book == 'e8p' else ''}"] = core.CompressionSpec("ldlq", b, codebook=book, seed=settings.seed)
    return specs


def _n_params(shapes: ModuleShapes) -> int:
    return sum(d_out * d_in for d_out, d_in in shapes.values())


def uniform_bpw(spec: Any, shapes: ModuleShapes) -> float:
    """The honest bpw of `spec` on every module (`core.module_bits`, all stored bits)."""
    return sum(core.module_bits(spec, *shape) for shape in shapes.values()) / _n_params(shapes)


def check_target(settings: KLBudgetSettings, shapes: ModuleShapes) -> None:
    """Refuse, before any work, a target below the cheapest candidate's honest bpw."""
    floor = min(uniform_bpw(s, shapes) for s in candidate_specs(settings).values())
    if floor > settings.bpw:
        raise PlanError(f"--bpw {settings.bpw:g} is below the cheapest candidate ({min(settings.bits)}-bit everywhere: "
                        f"{floor:.3f} bpw with its scales and seeds): raise --bpw or add a lower --budget-bits")


@dataclass(frozen=True)
class KLPlan:
    """The chosen plan, the candidate name per module, and the predicted KL (nats per token) of the plan
    and of each candidate used uniformly (the same predictor, for comparison)."""

    plan: Plan
    choice: tuple[tuple[ModuleKey, str], ...]
    predicted_kl: float
    bpw: float
    uniform: tuple[tuple[str, float, float], ...]  # (candidate, bpw, predicted KL)


def kl_plan(sensitivity: Mapping[ModuleKey, float], energy: Mapping[ModuleKey, float],
            errors: Mapping[str, Mapping[ModuleKey, float]], specs: Mapping[str, Any], bpw: float,
            shapes: ModuleShapes) -> KLPlan:
    """The knapsack over modules.

    sensitivity: module -> ½ mean G_ii (nats per token per unit of tr(ΔW H ΔWᵀ)); energy: module ->
    tr(W H Wᵀ); errors: candidate -> module -> relative error √(tr(ΔW H ΔWᵀ) / tr(W H Wᵀ)).
    """
    from calderalab.allocation import Option, budget_allocation

    keys = sorted(shapes)
    names = list(specs)
    for name in names:
        missing = [k for k in keys if k not in errors.get(name, {})]
        if missing:
            raise ValueError(f"candidate {name} has no measured error for {missing[:3]}")

    def loss(name: str, key: ModuleKey) -> float:
        return sensitivity[key] * errors[name][key] ** 2 * energy[key]

    def bits(name: str, key: ModuleKey) -> int:
        return core.module_bits(specs[name], *shapes[key])

    options = [[Option(name, bits(name, k), loss(name, k)) for name in names] for k in keys]
    allocation = budget_allocation(options, bpw * _n_params(shapes))
    choice = tuple((k, names[j]) for k, j in zip(keys, allocation.choice))
    n_layers = 1 + max(l for l, _ in keys)
    picked = dict(choice)
    plan = Plan(n_layers, tuple((k, specs[picked[k]]) for k in keys), KL_PRESET)
    uniform = tuple((name, uniform_bpw(specs[name], shapes), sum(loss(name, k) for k in keys)) for name in names)
    return KLPlan(plan, choice, allocation.total_loss, sum(bits(picked[k], k) for k in keys) / _n_params(shapes), uniform)


def h_energy(W: Any, H: Any) -> float:
    """tr(W H Wᵀ) in float64. W: (d_out, d_in), H: (d_in, d_in)."""
    W = W.detach().double()
    return float(((W @ H.double()) * W).sum())


def module_energies(model: Any, hessians: Sequence[tuple[int, Mapping[str, Any]]]) -> dict[ModuleKey, float]:
    """{(layer, module): tr(W H Wᵀ)} from the model's weights and the calibration Hessians."""
    from calderalab import models

    return {(layer, name): h_energy(models.target_linear(model, layer, name).weight, H)
            for layer, per_module in hessians for name, H in per_module.items()}


def kl_budget_plan(model: Any, settings: KLBudgetSettings, sensitivity: Mapping[ModuleKey, float],
                   hessians: Sequence[tuple[int, Mapping[str, Any]]], compress: Callable[[Plan], Any]) -> KLPlan:
    """Compress every candidate uniformly (`compress(plan)` returns a CompressReport; resumable) and solve
    the knapsack. sensitivity: `calib.fisher.output_sensitivity` of the model."""
    from calderalab import models

    shapes = models.module_shapes(model)
    check_target(settings, shapes)
    specs = candidate_specs(settings)
    energy = module_energies(model, hessians)
    errors = {}
    for name, spec in specs.items():
        report = compress(uniform_plan(models.num_layers(model), spec))
        errors[name] = {(m.layer, m.module): m.relative_error for m in report.modules if m.spec_key == spec.key()}
    return kl_plan(sensitivity, energy, errors, specs, settings.bpw, shapes)


def check_in_memory(model: Any) -> None:
    """The Fisher takes a backward pass through the whole model: refuse a layer-by-layer checkpoint."""
    from calderalab import models

    if models.layer_weights(model) is not None:
        raise PlanError("--plan kl needs the model in memory (its Fisher takes a backward pass through the whole model); "
                        "this checkpoint is larger than half the memory left, so it was opened layer by layer: use --plan budget, or a machine with more memory")


def summary_lines(chosen: KLPlan) -> list[str]:
    """The plan's mix, its bpw and predicted KL beside each candidate used uniformly."""
    from collections import Counter

    mix = Counter(name for _, name in chosen.choice)
    lines = [f"KL plan: {chosen.bpw:.3f} bpw, predicted KL {chosen.predicted_kl:.4f} nats/token; modules per candidate: "
             + ", ".join(f"{name} {mix[name]}" for name, _, _ in chosen.uniform if mix[name])]
    lines += [f"  uniform {name}: {bpw:.3f} bpw, predicted KL {kl:.4f}" for name, bpw, kl in chosen.uniform]
    lines.append("  (predicted: the Fisher-weighted errors summed over modules; on SmolLM2 the measured KL was 1.3-1.6x it, "
                 "so read it as an order, and measure the store: `calderalab ppl MODEL --data TEXT --artifacts STORE --plan PLAN`, PLAN from --save-plan)")
    return lines
