import pytest

from calderalab.eval.outcomes import InstanceOutcome, RunOutcomes, align, join_probe_results
from calderalab.eval.types import Instance, ProbeResult


def _inst(i):
    return Instance(family="f", index=i, seed=0, question="q", answer="1", answer_type="number", tolerance=0, n_steps=2,
                    plan_options=("x", "y"))


def test_join_orders_by_instances_and_reports_missing():
    insts = [_inst(0), _inst(1)]
    res = [ProbeResult(insts[1].uid, "understanding", "choice", True, "A", ""),
           ProbeResult(insts[1].uid, "execution", "choice", False, "2", ""),
           ProbeResult(insts[0].uid, "execution", "choice", True, "1", "")]
    with pytest.raises(ValueError, match=r"missing probe results for 1 probe.*f/0/0:understanding"):
        join_probe_results(insts, res)
    res.append(ProbeResult(insts[0].uid, "understanding", "choice", False, "B", ""))
    out = join_probe_results(insts, res)
    assert [(o.uid, o.understood, o.executed, o.executed_parsed) for o in out] == [
        ("f/0/0", False, True, "1"), ("f/0/1", True, False, "2")]
    assert [o.gap for o in out] == [False, True]
    with pytest.raises(ValueError, match="duplicate"):
        join_probe_results(insts, res + res[:1])
    with pytest.raises(ValueError, match="unknown instance"):
        join_probe_results(insts[:1], res)


def test_run_outcomes_counts_and_duplicates():
    o = [InstanceOutcome("a", "f", "1", True, False), InstanceOutcome("b", "f", "1", True, True),
         InstanceOutcome("c", "f", "1", False, True)]
    r = RunOutcomes("x", "All", tuple(o))
    assert (r.n, r.n_understood, r.n_executed, r.n_gaps) == (3, 2, 2, 1)
    with pytest.raises(ValueError, match="duplicate instance uids"):
        RunOutcomes("x", "All", (o[0], o[0]))
    r2 = RunOutcomes("y", "None", (o[2], o[0]))
    a, b = align(r, r2)
    assert [x.uid for x in a] == [x.uid for x in b] == ["a", "c"]
