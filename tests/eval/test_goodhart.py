"""Goodhart metrics on hand-made outcomes, and the exact identity of the execution-change split."""

from __future__ import annotations

import random

import pytest

from calderalab.eval.goodhart import decompose_execution_change, summarize
from calderalab.eval.outcomes import InstanceOutcome
from calderalab.eval.types import Verdict


def outcomes(spec: str, family: str = "f") -> list[InstanceOutcome]:
    """'UE' = understood+executed, 'U.' = understood only, '.E', '..', '-E' = no understanding probe."""
    table = {"U": True, ".": False, "-": None}
    return [InstanceOutcome(f"{family}/0/{i}", family, "15", executed=s[1] == "E", understood=table[s[0]]) for i, s in enumerate(spec.split())]


def test_verdicts_follow_the_definition():
    got = [o.verdict for o in outcomes("UE U. .E .. -E")]
    assert got == [Verdict.PASS, Verdict.GAP, Verdict.LUCKY, Verdict.FAIL, None]


def test_summary_counts_and_rates():
    s = summarize(outcomes("UE UE U. U. U. .E .. .."))
    assert (s.n, s.n_probed, s.passes, s.gaps, s.fails, s.lucky) == (8, 8, 2, 3, 2, 1)
    assert s.understanding_rate == 5 / 8 and s.execution_rate == 3 / 8
    assert s.conditional_gap_rate == 3 / 5 and s.gap_rate == 3 / 8 and s.lucky_rate == 1 / 8


def test_nothing_understood_gives_no_conditional_gap_rate():
    # The report's 3-bit uniform case: 0 gaps only because nothing is understood.
    s = summarize(outcomes(".. .E .. .. .. .. .."))
    assert s.gaps == 0 and s.understanding_rate == 0.0
    assert s.conditional_gap_rate is None
    assert summarize([]).execution_rate is None


def test_execution_only_instances_count_for_execution_only():
    s = summarize(outcomes("-E -. -E UE"))
    assert (s.n, s.n_probed, s.executed, s.understood) == (4, 1, 3, 1)
    assert s.execution_rate == 3 / 4 and s.understanding_rate == 1.0


def test_per_family_breakdown():
    s = summarize(outcomes("UE U.", "a") + outcomes(".. .E ..", "b"))
    assert list(s.per_family) == ["a", "b"]
    assert (s.per_family["a"].passes, s.per_family["a"].gaps) == (1, 1)
    assert (s.per_family["b"].lucky, s.per_family["b"].n) == (1, 3)
    assert s.to_dict()["per_family"]["a"]["conditional_gap_rate"] == 0.5


def test_duplicate_uids_are_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        summarize(outcomes("UE") + outcomes("U."))


def test_decomposition_buckets():
    a = outcomes("UE UE UE .. U. -E")
    b = outcomes(".. U. UE .E UE --")
    d = decompose_execution_change(a, b)
    # instance 0 lost understanding and execution; 1 kept understanding, lost execution;
    # 3 gained execution without understanding (residual); 4 gained while understood; 5 lost, no probe.
    assert (d.via_understanding, d.given_understanding, d.residual, d.total) == (-1, 0, 0, -1)


@pytest.mark.parametrize("seed", range(20))
def test_decomposition_identity_is_exact(seed):
    rng = random.Random(seed)
    codes = ["UE", "U.", ".E", "..", "-E", "-."]
    n = rng.randint(1, 40)
    a = outcomes(" ".join(rng.choice(codes) for _ in range(n)))
    b = outcomes(" ".join(rng.choice(codes) for _ in range(n)))
    d = decompose_execution_change(a, b)
    assert d.total == sum(o.executed for o in b) - sum(o.executed for o in a)
    assert d.total == d.via_understanding + d.given_understanding + d.residual
    r = d.rates()
    assert r["total"] == pytest.approx(r["via_understanding"] + r["given_understanding"] + r["residual"], abs=1e-12)


def test_decomposition_needs_paired_runs():
    with pytest.raises(ValueError, match="not paired"):
        decompose_execution_change(outcomes("UE U."), outcomes("UE"))
