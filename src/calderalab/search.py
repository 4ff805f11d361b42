"""Minimum protection search (the report's Experiment 3): the smallest number k of protected
last layers whose execution stays within a tolerance of the uncompressed baseline.

Binary search over k in 0..n_layers assuming that protecting more layers never hurts, with
the boundary checked (k passes and k-1 was evaluated and fails) and every evaluation kept
with its statistics. No torch: the caller evaluates a protection set and returns outcomes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

from calderalab.eval.stats import mcnemar_from_counts, wilson_interval

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TailResult:
    """Per-instance execution outcomes with the last k layers protected, in the baseline's instance order."""

    outcomes: tuple[bool, ...]


@dataclass(frozen=True)
class TailEvaluation:
    """One evaluated protection set. b/c: discordant pairs vs baseline (b = baseline right,
    tail wrong; c = tail right, baseline wrong); mcnemar_p: exact two-sided McNemar."""

    k: int
    protected: tuple[int, ...]
    n_correct: int
    n: int
    rate: float
    ci_low: float
    ci_high: float
    b: int
    c: int
    mcnemar_p: float
    within_tolerance: bool


@dataclass(frozen=True)
class MinProtectResult:
    k: int
    protected: tuple[int, ...]
    baseline_rate: float
    tolerance: float
    evaluations: tuple[TailEvaluation, ...]  # in evaluation order
    boundary_verified: bool  # k passes and (k == 0 or k - 1 evaluated and fails)
    monotonicity_violations: tuple[int, ...]  # evaluated k' > k that fail (the assumption broke)


def _wilson(k: int, n: int) -> tuple[float, float]:
    iv = wilson_interval(k, n)
    return iv.low, iv.high


def _mcnemar_p(b: int, c: int) -> float:
    return mcnemar_from_counts(b, c).p_value


def score_tail(k: int, n_layers: int, result: TailResult, baseline: Sequence[bool], tolerance: float) -> TailEvaluation:
    """Statistics of one protection set against the baseline's paired outcomes."""
    out = tuple(bool(x) for x in result.outcomes)
    if len(out) != len(baseline):
        raise ValueError(f"k={k}: {len(out)} outcomes but the baseline has {len(baseline)}; evaluate the same instances")
    n, n_correct = len(out), sum(out)
    b = sum(1 for x, y in zip(baseline, out) if x and not y)
    c = sum(1 for x, y in zip(baseline, out) if y and not x)
    low, high = _wilson(n_correct, n)
    rate = n_correct / n
    return TailEvaluation(
        k=k, protected=tuple(range(n_layers - k, n_layers)), n_correct=n_correct, n=n, rate=rate, ci_low=low, ci_high=high,
        b=b, c=c, mcnemar_p=_mcnemar_p(b, c),
        # rounding guard: 3/7 vs 3/7 - 0.0 must pass although floats are inexact
        within_tolerance=rate >= sum(baseline) / n - tolerance - 1e-12,
    )


def min_protect(
    evaluate_tail: Callable[[int], TailResult],
    n_layers: int,
    baseline: Sequence[bool],
    tolerance: float = 0.0,
    verify_above: bool = True,
) -> MinProtectResult:
    """Smallest k such that protecting layers n_layers-k .. n_layers-1 keeps execution rate
    >= baseline rate - tolerance. k = n_layers (everything protected) is the baseline itself
    and passes by definition; it is evaluated only if the search ends there. verify_above
    also evaluates k+1, which must pass too under monotonicity. Evaluates at most
    3 + ceil(log2(n_layers)) protection sets, each at most once.
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    if not baseline:
        raise ValueError("baseline outcomes are empty: evaluate the uncompressed model first")
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance is a rate difference in [0, 1), got {tolerance}")
    cache: dict[int, TailEvaluation] = {}
    order: list[TailEvaluation] = []

    def passes(k: int) -> bool:
        if k not in cache:
            ev = score_tail(k, n_layers, evaluate_tail(k), baseline, tolerance)
            log.info("protect last %d: %d/%d (within tolerance: %s)", k, ev.n_correct, ev.n, ev.within_tolerance)
            cache[k] = ev
            order.append(ev)
        return cache[k].within_tolerance

    if passes(0):
        lo, hi = -1, 0
    else:
        lo, hi = 0, n_layers  # invariant: lo fails, hi passes (n_layers by definition)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if passes(mid):
                hi = mid
            else:
                lo = mid
        if hi == n_layers:
            passes(n_layers)  # record it; a failure here means the evaluation itself is noisy
    k = hi
    if verify_above and k < n_layers:
        passes(k + 1)
    verified = cache[k].within_tolerance and (k == 0 or (k - 1 in cache and not cache[k - 1].within_tolerance))
    violations = tuple(sorted(j for j, ev in cache.items() if j > k and not ev.within_tolerance))
    return MinProtectResult(
        k=k, protected=tuple(range(n_layers - k, n_layers)), baseline_rate=sum(map(bool, baseline)) / len(baseline),
        tolerance=tolerance, evaluations=tuple(order), boundary_verified=verified, monotonicity_violations=violations,
    )
