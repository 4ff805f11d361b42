"""Minimum protection search (the report's Experiment 3): the smallest number k of protected
last layers whose execution is non-inferior to the uncompressed baseline's by a paired test.

A tail k passes when the one-sided upper confidence bound of the paired execution drop
(baseline − protected, Newcombe's interval, `eval.noninferiority.noninferior`) is below the margin; the
point estimate alone decides nothing. Binary search over k in 0..n_layers assuming that
protecting more layers never hurts, with the boundary checked (k passes and k-1 was evaluated
and fails), every evaluation kept with its statistics, and an honest "no k passes" when even
the fully protected model cannot show non-inferiority at this N. No torch: the caller evaluates
a protection set and returns outcomes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

from calderalab.eval.noninferiority import NonInferiority, noninferior, noninferiority_sample_size
from calderalab.eval.stats import mcnemar_from_counts, wilson_interval

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MarginTest:
    """The non-inferiority rule: margin (a rate: 0.05 = 5 points of execution), one-sided
    confidence level, and the power used to say how many instances the margin needs."""

    margin: float = 0.05
    level: float = 0.95
    power: float = 0.8

    def __post_init__(self) -> None:
        if not 0.0 < self.margin < 1.0:
            raise ValueError(f"margin is an execution-rate drop in (0, 1) (0.05 = 5 points), got {self.margin}")
        if not 0.5 < self.level < 1.0:
            raise ValueError(f"one-sided confidence level must be in (0.5, 1), got {self.level}")
        if not 0.0 < self.power < 1.0:
            raise ValueError(f"power must be in (0, 1), got {self.power}")


@dataclass(frozen=True)
class TailResult:
    """Per-instance execution outcomes with the last k layers protected, in the baseline's instance order."""

    outcomes: tuple[bool, ...]


@dataclass(frozen=True)
class TailEvaluation:
    """One evaluated protection set. b/c: discordant pairs vs baseline (b = baseline right,
    tail wrong; c = tail right, baseline wrong); mcnemar_p: exact two-sided McNemar;
    test: the paired non-inferiority test of the tail against the baseline."""

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
    test: NonInferiority

    @property
    def passes(self) -> bool:
        return self.test.noninferior


@dataclass(frozen=True)
class MinProtectResult:
    k: int | None  # None: no tail passes, not even every layer protected
    protected: tuple[int, ...]
    test: MarginTest
    n: int  # paired instances
    needed_n: int  # instances the margin needs at the deciding tail's discordance (MarginTest.power)
    discordance: float  # that discordance rate, (b + c) / n
    evaluations: tuple[TailEvaluation, ...]  # in evaluation order
    boundary_verified: bool  # k passes and (k == 0 or k - 1 evaluated and fails); False when k is None
    monotonicity_violations: tuple[int, ...]  # evaluated k' > k that fail (the assumption broke)

    @property
    def deciding(self) -> TailEvaluation:
        return deciding_tail(self.evaluations, self.k)


def deciding_tail(evaluations: Sequence[TailEvaluation], k: int | None) -> TailEvaluation:
    """The passing tail k, or — when none passes — the evaluated tail closest to passing."""
    if k is not None:
        return next(e for e in evaluations if e.k == k)
    return min(evaluations, key=lambda e: (e.test.upper, -e.k))


def score_tail(k: int, n_layers: int, result: TailResult, baseline: Sequence[bool],
               test: MarginTest = MarginTest()) -> TailEvaluation:
    """Statistics of one protection set against the baseline's paired outcomes."""
    out = tuple(bool(x) for x in result.outcomes)
    if len(out) != len(baseline):
        raise ValueError(f"k={k}: {len(out)} outcomes but the baseline has {len(baseline)}; evaluate the same instances")
    n, n_correct = len(out), sum(out)
    b = sum(1 for x, y in zip(baseline, out) if x and not y)
    c = sum(1 for x, y in zip(baseline, out) if y and not x)
    iv = wilson_interval(n_correct, n)
    return TailEvaluation(
        k=k, protected=tuple(range(n_layers - k, n_layers)), n_correct=n_correct, n=n, rate=n_correct / n,
        ci_low=iv.low, ci_high=iv.high, b=b, c=c, mcnemar_p=mcnemar_from_counts(b, c).p_value,
        test=noninferior(list(baseline), list(out), test.margin, test.level),
    )


def _search(passes: Callable[[int], bool], n_layers: int) -> int | None:
    """Smallest passing k by bisection under monotonicity; None when even k = n_layers fails."""
    if passes(0):
        return 0
    lo, hi = 0, n_layers  # invariant: lo fails; hi passes if anything does
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid
    # k = n_layers is the baseline's own weights: it passes only when N is large enough for the margin
    return hi if passes(hi) else None


def min_protect(
    evaluate_tail: Callable[[int], TailResult],
    n_layers: int,
    baseline: Sequence[bool],
    test: MarginTest = MarginTest(),
) -> MinProtectResult:
    """Smallest k such that protecting layers n_layers-k .. n_layers-1 is non-inferior to the
    baseline: one-sided `test.level` upper bound of (baseline − tail) execution rate < test.margin.
    It also evaluates k+1, which must pass too under monotonicity. Evaluates at most
    3 + ceil(log2(n_layers)) protection sets, each at most once.
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    if not baseline:
        raise ValueError("baseline outcomes are empty: evaluate the uncompressed model first")
    cache: dict[int, TailEvaluation] = {}
    order: list[TailEvaluation] = []

    def passes(k: int) -> bool:
        if k not in cache:
            ev = score_tail(k, n_layers, evaluate_tail(k), baseline, test)
            log.info("protect last %d: %d/%d, drop upper bound %.3f vs margin %.3f: %s", k, ev.n_correct, ev.n,
                     ev.test.upper, test.margin, "passes" if ev.passes else "fails")
            cache[k] = ev
            order.append(ev)
        return cache[k].passes

    k = _search(passes, n_layers)
    if k is not None and k < n_layers:
        passes(k + 1)
    verified = k is not None and (k == 0 or (k - 1 in cache and not cache[k - 1].passes))
    violations = () if k is None else tuple(sorted(j for j, ev in cache.items() if j > k and not ev.passes))
    # how many instances the margin needs (Nam 1997) at the deciding tail's observed discordance,
    # assuming no true drop
    decider = deciding_tail(order, k)
    discordance = (decider.b + decider.c) / decider.n
    needed = noninferiority_sample_size(discordance, test.margin, alpha=1 - test.level, power=test.power)
    return MinProtectResult(
        k=k, protected=() if k is None else tuple(range(n_layers - k, n_layers)),
        test=test, n=len(baseline), needed_n=needed,
        discordance=discordance, evaluations=tuple(order), boundary_verified=verified, monotonicity_violations=violations,
    )
