"""Choices derived from a sensitivity profile: ultra rank maps, and the exact budget allocation (a
multiple-choice knapsack, used by the `budget` preset in `calderalab.budget`) with the equal-budget
alternatives a budget plan is compared against. No torch.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np

from calderalab.sensitivity.profile import SensitivityProfile

RankPolicy = Literal["recoverability", "severity"]


# ------------------------------------------------------------------ ultra


@dataclass(frozen=True)
class UltraRule:
    """How extra rank is spread over the protected layers.

    multiplier(l) = clip(max_multiplier * (x_l / saturation) ** exponent, min_multiplier, max_multiplier),
    rank(l) = base_rank * multiplier rounded half-up to a multiple of `granularity`, capped at max_rank.

    x_l is the layer's effective fidelity f_l / f_noise under policy "recoverability" (more rank
    where the layer still keeps some of its answers, i.e. where rank can still bring them back;
    a layer at ~0% fidelity gets the floor), and 1 - f_l / f_noise under "severity" (more rank
    to the worse layers). The defaults are calibrated so that the report's 7B critical zone
    (fidelity 13.0/4.4/2.6/1.6/0.6% at layers 23-27, base rank 32) gives its ultra ranks
    256/256/128/80/64: the report's ranks *fall* as sensitivity rises, which is the
    recoverability policy, not the severity one.
    """

    policy: RankPolicy = "recoverability"
    max_multiplier: float = 8.0
    min_multiplier: float = 2.0
    saturation: float = 0.0445
    exponent: float = 1.2
    granularity: int = 16

    def __post_init__(self) -> None:
        if not 1.0 <= self.min_multiplier <= self.max_multiplier:
            raise ValueError(f"need 1 <= min_multiplier <= max_multiplier, got {self.min_multiplier}, {self.max_multiplier}")
        if not (0.0 < self.saturation <= 1.0 and self.exponent > 0 and self.granularity >= 1):
            raise ValueError(
                f"saturation must be in (0, 1], exponent > 0, granularity >= 1; got {self.saturation}, {self.exponent}, {self.granularity}"
            )

    def multiplier(self, effective_fidelity: float) -> float:
        x = effective_fidelity if self.policy == "recoverability" else 1.0 - effective_fidelity
        raw = self.max_multiplier * (max(x, 0.0) / self.saturation) ** self.exponent
        return min(max(raw, self.min_multiplier), self.max_multiplier)


def ultra_ranks(
    profile: SensitivityProfile,
    base_rank: int,
    layers: Sequence[int],
    rule: UltraRule = UltraRule(),
    max_rank: int | None = None,
) -> dict[int, int]:
    """Rank per protected layer by `rule` (usually layers = the critical zone); max_rank is
    min(d_out, d_in) of the smallest module, the largest rank that still means something."""
    if base_rank < 1:
        raise ValueError(f"base_rank must be >= 1, got {base_rank}")
    if not layers:
        raise ValueError("ultra_ranks needs at least one layer (is the critical zone empty?)")
    noise_fid = profile.noise.fidelity if profile.noise.fidelity > 0 else 1.0
    ranks = {}
    for layer in layers:
        m = rule.multiplier(profile.row(layer).metrics.fidelity / noise_fid)
        g = rule.granularity
        rank = max(g, math.floor(base_rank * m / g + 0.5) * g)
        ranks[layer] = min(rank, max_rank) if max_rank is not None else rank
    return ranks


# ------------------------------------------------------------------ budget knapsack


@dataclass(frozen=True)
class Option:
    """One way to store one layer: its name (e.g. "3b-r32", "none"), stored bits, predicted loss."""

    name: str
    bits: float
    loss: float

    def __post_init__(self) -> None:
        if not (self.bits >= 0 and self.loss >= 0 and math.isfinite(self.bits) and math.isfinite(self.loss)):
            raise ValueError(f"option {self.name!r}: bits and loss must be finite and >= 0, got {self.bits}, {self.loss}")


@dataclass(frozen=True)
class Allocation:
    choice: tuple[int, ...]  # option index per layer
    names: tuple[str, ...]
    total_bits: float
    total_loss: float


def _allocation(options: Sequence[Sequence[Option]], choice: Sequence[int]) -> Allocation:
    picked = [options[l][c] for l, c in enumerate(choice)]
    return Allocation(tuple(choice), tuple(o.name for o in picked), sum(o.bits for o in picked), sum(o.loss for o in picked))


def budget_allocation(options: Sequence[Sequence[Option]], budget_bits: float) -> Allocation:
    """Pick one option per layer minimising the summed predicted loss subject to summed bits <= budget.

    An exact multiple-choice knapsack, solved as a 0/1 integer program with HiGHS
    (scipy.optimize.milp, relative MIP gap 0): x[l, o] in {0, 1}, sum_o x[l, o] = 1 for each l,
    sum bits[l, o] x[l, o] <= budget, minimise sum loss[l, o] x[l, o].
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    if not options or any(len(o) == 0 for o in options):
        raise ValueError("budget_allocation needs at least one option for every layer")
    cheapest = sum(min(o.bits for o in opts) for opts in options)
    if cheapest > budget_bits:
        raise ValueError(f"budget {budget_bits:.6g} bits is below the cheapest allocation ({cheapest:.6g} bits); raise the target bpw")
    index = [(l, j) for l, opts in enumerate(options) for j in range(len(opts))]
    scale = max(budget_bits, 1.0)  # keep the bits row O(1) for the solver's tolerances
    bits = np.array([options[l][j].bits / scale for l, j in index])
    loss = np.array([options[l][j].loss for l, j in index])
    one_hot = np.zeros((len(options), len(index)))
    for col, (l, _) in enumerate(index):
        one_hot[l, col] = 1.0
    res = milp(
        c=loss,
        constraints=[LinearConstraint(one_hot, 1, 1), LinearConstraint(bits[None, :], -np.inf, budget_bits / scale)],
        integrality=np.ones(len(index)),
        bounds=Bounds(0, 1),
        options={"mip_rel_gap": 0.0},
    )
    if res.x is None:
        raise RuntimeError(f"budget knapsack not solved: {res.message}")
    choice = [0] * len(options)
    for col, (l, j) in enumerate(index):
        if res.x[col] > 0.5:
            choice[l] = j
    alloc = _allocation(options, choice)
    if alloc.total_bits > budget_bits * (1 + 1e-9):
        raise RuntimeError(f"knapsack solution exceeds the budget: {alloc.total_bits} > {budget_bits}")
    return alloc


def predicted_losses(
    sensitivity: Mapping[int, float], profiled_error: Mapping[int, float], option_errors: Mapping[int, Sequence[float]]
) -> dict[int, list[float]]:
    """Second-order loss prediction per layer and option: s_l * (e_lo / e_l,profiled)^2.

    s_l is the layer's measured sensitivity at the profiled spec (e.g. its mean KL or fidelity
    loss) and e the relative Hessian-weighted error; output divergence grows with the square of
    a small weight perturbation (KL ~ 1/2 d^T F d), so the measured s_l is rescaled by the
    squared error ratio. A protected option has e = 0 and loss 0.
    """
    out = {}
    for layer, errs in option_errors.items():
        ref = profiled_error[layer]
        if ref <= 0:
            raise ValueError(f"layer {layer}: profiled error must be > 0 to scale from, got {ref}")
        out[layer] = [max(sensitivity[layer], 0.0) * (e / ref) ** 2 for e in errs]
    return out


def equal_budget_alternatives(
    options: Sequence[Sequence[Option]], budget_bits: float, base: str, protected: str = "none", seed: int = 0
) -> dict[str, Allocation]:
    """The plans a budget allocation is compared against at the same byte budget.

    uniform: the costliest single option (same name on every layer) that fits the budget;
    first-k / last-k / random-k: `protected` on as many layers as fit (taken in that order:
    from layer 0, from the last layer, in a seeded random order), `base` elsewhere.
    """
    names = [{o.name: j for j, o in enumerate(opts)} for opts in options]
    missing = [l for l, n in enumerate(names) if base not in n or protected not in n]
    if missing:
        raise ValueError(f"layers {missing} lack the option {base!r} or {protected!r}")
    out: dict[str, Allocation] = {}
    uniform = [
        _allocation(options, [n[name] for n in names]) for name in names[0] if all(name in n for n in names)
    ]
    fitting = [a for a in uniform if a.total_bits <= budget_bits]
    if fitting:
        out["uniform"] = max(fitting, key=lambda a: (a.total_bits, -a.total_loss))
    order = list(range(len(options)))
    rng = random.Random(seed)
    shuffled = order[:]
    rng.shuffle(shuffled)
    for label, seq in (("first-k", order), ("last-k", order[::-1]), ("random-k", shuffled)):
        choice = [n[base] for n in names]
        total = sum(options[l][c].bits for l, c in enumerate(choice))
        if total > budget_bits:
            continue
        for l in seq:
            extra = options[l][names[l][protected]].bits - options[l][choice[l]].bits
            if total + extra > budget_bits:
                break
            choice[l] = names[l][protected]
            total += extra
        out[label] = _allocation(options, choice)
    return out
