"""Per-instance outcomes of one evaluated configuration, joined from its two probes.

Plain data (no torch): built from `ProbeResult`s right after an evaluation, or read back from
the results database, and consumed by the statistics and the report tables. Pairing two
configurations is by `Instance.uid`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from calderalab.eval.types import ChoiceDetail, Instance, ProbeKind, ProbeResult, Verdict


@dataclass(frozen=True)
class InstanceOutcome:
    """Both probes of one instance. `executed_parsed` is the parsed final answer (None = unparsable).

    understood=None: the instance has no understanding probe (GSM8K rows); it counts towards
    execution only and has no verdict.
    """

    uid: str
    family: str
    expected: str
    understood: bool | None
    executed: bool
    executed_parsed: str | None = None
    canonical: bool = False
    seed: int | None = None  # the instance generation seed (runs over several seeds report mean ± std)
    n_steps: int | None = None  # steps of the gold plan (the ladder's k)
    understanding_detail: ChoiceDetail | None = None  # options, pick and scores of the understanding probe
    execution_detail: ChoiceDetail | None = None  # the same for execution scored over answer options

    def detail(self, probe: ProbeKind) -> ChoiceDetail | None:
        return self.understanding_detail if probe == "understanding" else self.execution_detail

    @property
    def probed(self) -> bool:
        return self.understood is not None

    @property
    def verdict(self) -> Verdict | None:
        return None if self.understood is None else Verdict.of(self.understood, self.executed)

    @property
    def gap(self) -> bool:
        """The Goodhart Gap indicator: understood but not executed (False without an understanding probe)."""
        return bool(self.understood) and not self.executed


@dataclass(frozen=True)
class RunOutcomes:
    """One configuration's outcomes on a set of instances, with how to label it in a table."""

    label: str  # e.g. "3-bit selective"
    protected: str  # e.g. "70-79", "None", "All"
    outcomes: tuple[InstanceOutcome, ...]
    bits: str = "-"  # nominal bit width for bitwidth tables ("3", "4", "-" for the baseline)

    def __post_init__(self) -> None:
        uids = [o.uid for o in self.outcomes]
        if len(set(uids)) != len(uids):
            dup = sorted({u for u in uids if uids.count(u) > 1})
            raise ValueError(f"run {self.label!r} has duplicate instance uids: {dup[:5]}")

    @property
    def n(self) -> int:
        return len(self.outcomes)

    @property
    def n_probed(self) -> int:
        """Instances with an understanding probe: the denominator of understanding and gap counts."""
        return sum(o.probed for o in self.outcomes)

    @property
    def n_understood(self) -> int:
        return sum(bool(o.understood) for o in self.outcomes)

    @property
    def n_executed(self) -> int:
        return sum(o.executed for o in self.outcomes)

    @property
    def n_gaps(self) -> int:
        return sum(o.gap for o in self.outcomes)

    def seeds(self) -> tuple[int, ...]:
        return tuple(sorted({o.seed for o in self.outcomes if o.seed is not None}))

    def for_seed(self, seed: int) -> "RunOutcomes":
        return RunOutcomes(self.label, self.protected, tuple(o for o in self.outcomes if o.seed == seed), self.bits)

    def by_uid(self) -> dict[str, InstanceOutcome]:
        return {o.uid: o for o in self.outcomes}


def join_probe_results(instances: Sequence[Instance], results: Iterable[ProbeResult]) -> tuple[InstanceOutcome, ...]:
    """Join execution and understanding ProbeResults per instance, in the order of `instances`.

    Every instance needs an execution result; instances with plan options (>= 2) also need an
    understanding result, others (GSM8K) may lack one. Raises ValueError naming the probes that
    are missing or duplicated, or results that belong to no given instance, instead of silently
    scoring them as wrong.
    """
    known = {inst.uid for inst in instances}
    table: dict[tuple[str, str], ProbeResult] = {}
    for res in results:
        if res.instance_uid not in known:
            raise ValueError(f"probe result for unknown instance {res.instance_uid!r}")
        key = (res.instance_uid, res.probe)
        if key in table:
            raise ValueError(f"duplicate {res.probe} result for instance {res.instance_uid!r}")
        table[key] = res
    missing = [f"{i.uid}:execution" for i in instances if (i.uid, "execution") not in table]
    missing += [
        f"{i.uid}:understanding"
        for i in instances
        if len(i.plan_options) >= 2 and (i.uid, "understanding") not in table
    ]
    if missing:
        raise ValueError(f"missing probe results for {len(missing)} probe(s), e.g. {missing[:4]}")
    def get(inst: Instance, probe: str) -> ProbeResult | None:
        return table.get((inst.uid, probe))

    return tuple(
        InstanceOutcome(
            uid=inst.uid,
            family=inst.family,
            expected=inst.answer,
            understood=None if get(inst, "understanding") is None else get(inst, "understanding").correct,
            executed=table[(inst.uid, "execution")].correct,
            executed_parsed=table[(inst.uid, "execution")].parsed,
            canonical=inst.canonical,
            seed=inst.seed,
            n_steps=inst.n_steps,
            understanding_detail=None if get(inst, "understanding") is None else get(inst, "understanding").detail,
            execution_detail=table[(inst.uid, "execution")].detail,
        )
        for inst in instances
    )


def align(a: RunOutcomes, b: RunOutcomes) -> tuple[tuple[InstanceOutcome, ...], tuple[InstanceOutcome, ...]]:
    """The outcomes of a and b on their common instances, in a's order.

    Raises ValueError when they share no instance (different suites or seeds).
    """
    b_map = b.by_uid()
    common = [o for o in a.outcomes if o.uid in b_map]
    if not common:
        raise ValueError(
            f"runs {a.label!r} and {b.label!r} share no instance uid: they were evaluated on different "
            "suites/seeds; compare runs made with the same --n/--seeds"
        )
    return tuple(common), tuple(b_map[o.uid] for o in common)
