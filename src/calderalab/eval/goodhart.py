"""Goodhart Gap metrics over per-instance outcomes. Pure Python: no torch, no I/O.

summarize() and decompose_execution_change() take eval.outcomes.InstanceOutcome and read only
uid, family, executed, understood and verdict.

Per instance (DESIGN.md, Probe suite): PASS = understood and executed, GAP = understood but not
executed, FAIL = neither, LUCKY = executed without understanding. The conditional gap rate
gaps / understood is the headline number, because a model that understands nothing shows
zero gaps (the report's 3-bit uniform 7B case) and must not look gap-free: with nothing
understood the rate is None, not 0.

Instances without an understanding probe (GSM8K) count towards execution only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from calderalab.eval.outcomes import InstanceOutcome
from calderalab.eval.types import Verdict


def _rate(count: int, total: int) -> float | None:
    return count / total if total else None


@dataclass(frozen=True)
class GoodhartSummary:
    """Counts and rates over a set of instances.

    n: instances; n_probed: those with an understanding probe (the denominator of
    understanding_rate, lucky_rate and the verdict counts). Rates are None when their
    denominator is 0.
    """

    n: int
    n_probed: int
    executed: int
    understood: int
    passes: int
    gaps: int
    fails: int
    lucky: int
    per_family: dict[str, "GoodhartSummary"] = field(default_factory=dict)

    @property
    def execution_rate(self) -> float | None:
        return _rate(self.executed, self.n)

    @property
    def understanding_rate(self) -> float | None:
        return _rate(self.understood, self.n_probed)

    @property
    def gap_rate(self) -> float | None:
        """Gaps over all probed instances (the report's 'Goodhart Gaps x/7', as a rate)."""
        return _rate(self.gaps, self.n_probed)

    @property
    def conditional_gap_rate(self) -> float | None:
        """Gaps / understood: the share of understood problems the model then fails to execute."""
        return _rate(self.gaps, self.understood)

    @property
    def lucky_rate(self) -> float | None:
        """LUCKY over probed instances: right answers the model could not justify by a plan."""
        return _rate(self.lucky, self.n_probed)

    def to_dict(self) -> dict:
        keys = ("n", "n_probed", "executed", "understood", "passes", "gaps", "fails", "lucky")
        out: dict = {k: getattr(self, k) for k in keys}
        for rate in ("execution_rate", "understanding_rate", "gap_rate", "conditional_gap_rate", "lucky_rate"):
            out[rate] = getattr(self, rate)
        out["per_family"] = {fam: s.to_dict() for fam, s in self.per_family.items()}
        return out


def _count(outcomes: Sequence[InstanceOutcome]) -> GoodhartSummary:
    verdicts = [o.verdict for o in outcomes if o.verdict is not None]
    return GoodhartSummary(
        n=len(outcomes),
        n_probed=len(verdicts),
        executed=sum(o.executed for o in outcomes),
        understood=sum(bool(o.understood) for o in outcomes),
        passes=verdicts.count(Verdict.PASS),
        gaps=verdicts.count(Verdict.GAP),
        fails=verdicts.count(Verdict.FAIL),
        lucky=verdicts.count(Verdict.LUCKY),
    )


def summarize(outcomes: Sequence[InstanceOutcome]) -> GoodhartSummary:
    """Overall summary plus one per family (families in first-seen order)."""
    uids = [o.uid for o in outcomes]
    if len(set(uids)) != len(uids):
        dupes = sorted({u for u in uids if uids.count(u) > 1})
        raise ValueError(f"duplicate instance uids in outcomes: {dupes[:5]}")
    families: dict[str, list[InstanceOutcome]] = {}
    for o in outcomes:
        families.setdefault(o.family, []).append(o)
    total = _count(outcomes)
    per_family = {fam: _count(group) for fam, group in families.items()}
    return GoodhartSummary(**{**total.__dict__, "per_family": per_family})


@dataclass(frozen=True)
class ExecutionChange:
    """Paired change in executed count from run a to run b, split by what happened to understanding.

    Counts (b minus a, over instances):
      via_understanding = instances understood in a but not in b,
      given_understanding = instances understood in both runs,
      residual = the rest (not understood in a, or no understanding probe).
    Identity (exact, integers): total == via_understanding + given_understanding + residual.
    Negative numbers are losses. Rates divide by n.
    """

    n: int
    total: int
    via_understanding: int
    given_understanding: int
    residual: int

    def rates(self) -> dict[str, float]:
        if self.n == 0:
            return {k: 0.0 for k in ("total", "via_understanding", "given_understanding", "residual")}
        return {
            "total": self.total / self.n,
            "via_understanding": self.via_understanding / self.n,
            "given_understanding": self.given_understanding / self.n,
            "residual": self.residual / self.n,
        }


def _pair(a: Sequence[InstanceOutcome], b: Sequence[InstanceOutcome]) -> list[tuple[InstanceOutcome, InstanceOutcome]]:
    by_uid_b = {o.uid: o for o in b}
    uids_a = {o.uid for o in a}
    if uids_a != set(by_uid_b) or len(a) != len(b):
        only_a, only_b = sorted(uids_a - set(by_uid_b)), sorted(set(by_uid_b) - uids_a)
        raise ValueError(
            f"runs are not paired on the same instances: only in a {only_a[:5]}, only in b {only_b[:5]} "
            f"(sizes {len(a)} vs {len(b)}); evaluate both configurations on the same instance seed"
        )
    return [(o, by_uid_b[o.uid]) for o in a]


def decompose_execution_change(a: Sequence[InstanceOutcome], b: Sequence[InstanceOutcome]) -> ExecutionChange:
    """Split the executed-count change a → b into understanding loss, execution loss and residual.

    For each instance i, d_i = executed_b(i) − executed_a(i) lands in exactly one bucket
    (see ExecutionChange), so the three buckets sum to Σ d_i.
    """
    pairs = _pair(a, b)
    total = sum(ob.executed for _, ob in pairs) - sum(oa.executed for oa, _ in pairs)
    via = given = rest = 0
    for oa, ob in pairs:
        d = int(ob.executed) - int(oa.executed)
        if oa.understood and ob.understood is False:
            via += d
        elif oa.understood and ob.understood:
            given += d
        else:
            rest += d
    return ExecutionChange(n=len(a), total=total, via_understanding=via, given_understanding=given, residual=rest)
