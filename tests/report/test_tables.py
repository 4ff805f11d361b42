import pytest

from calderalab.eval.outcomes import InstanceOutcome, RunOutcomes
from calderalab.eval.types import ChoiceDetail
from calderalab.report import tables

FAMS = ["discount_coupon", "time_duration", "financial_compound", "recipe_scale", "unit_chain",
        "transitive_order", "task_schedule"]
EXPECTED = ["15", "4:15 PM", "1168", "3", "6.3", "D<C<B<A", "9:30 AM"]


def _run(label, protected, verdicts, parsed=None, bits="-"):
    parsed = parsed or [None] * 7
    outs = []
    for i, (fam, exp, v, p) in enumerate(zip(FAMS, EXPECTED, verdicts, parsed)):
        und, exe = {"PASS": (True, True), "GAP": (True, False), "FAIL": (False, False), "LUCKY": (False, True)}[v]
        # Four equal-length lettered options, the right one at letter i mod 4 (no surface cue).
        detail = ChoiceDetail("letters", 4, i % 4, i % 4 if und else (i + 1) % 4, i % 4, (10, 10, 10, 10))
        outs.append(InstanceOutcome(f"{fam}/0/0", fam, exp, und, exe, exp if exe else p, canonical=True,
                                    understanding_detail=detail))
    return RunOutcomes(label, protected, tuple(outs), bits=bits)


BASE = _run("Baseline", "All", ["PASS", "GAP", "FAIL", "PASS", "GAP", "PASS", "PASS"],
            [None, "2:45 PM", "1080", None, "8.7", None, None])
SEL3 = _run("3-bit selective", "70-79", ["PASS", "PASS", "GAP", "PASS", "FAIL", "PASS", "PASS"],
            [None, None, None, None, "8.7", None, None], bits="3")
UNI3 = _run("3-bit uniform", "None", ["FAIL", "FAIL", "FAIL", "LUCKY", "FAIL", "FAIL", "FAIL"], bits="3")


def test_rate_cell_report_example():
    assert tables.rate_cell(6, 7) == "6/7 (86%) [49–97]"
    assert tables.rate_cell(0, 7) == "0/7 (0%) [0–35]"
    assert tables.rate_cell(7, 7) == "7/7 (100%) [65–100]"


def test_goodhart_table_exact():
    text = tables.goodhart_table([BASE, SEL3, UNI3])
    lines = text.splitlines()
    assert lines[0] == "| Config | Protected | Understanding | Execution | Gaps | Gap rate (of understood) |"
    assert lines[1] == "|---|---|---|---|---|---|"
    # Understanding: chance 1/4, P[Binom(7, 1/4) >= 6] = 0.0013; execution (generated answers, seven
    # different right answers): the best constant guess gets 1/7, P[Binom(7, 1/7) >= 4] = 0.0101.
    assert lines[2] == ("| Baseline | All | 6/7 (86%) [49–97]; chance 25%, p=0.001 | 4/7 (57%) [25–84]; chance 14%, "
                        "p=0.010 | 2/7 | 2/6 (33%) [10–70] |")
    assert lines[3] == ("| 3-bit selective | 70-79 | 6/7 (86%) [49–97]; chance 25%, p=0.001 | 5/7 (71%) [36–92]; "
                        "chance 14%, p<0.001 | 1/7 | 1/6 (17%) [3–56] |")
    assert lines[4] == ("| 3-bit uniform | None | 0/7 (0%) [0–35]; chance 25%, p=1.000 | 1/7 (14%) [3–51]; chance 14%, "
                        "p=0.660 | 0/7 | – (none understood) |")
    # The same runs where the baseline's understanding is at chance: no gap rate is a finding.
    at_chance = RunOutcomes("Baseline", "All", tuple(
        InstanceOutcome(o.uid, o.family, o.expected, o.understood, o.executed, o.executed_parsed,
                        understanding_detail=ChoiceDetail("letters", 4, 0, 0, 0, (10, 10, 10, 10)))
        for o in BASE.outcomes))  # every right plan at letter A: the "always A" rule gets the same 6/7
    assert all(line.endswith("| not measurable |") for line in
               tables.goodhart_table([at_chance, SEL3], note=False).splitlines()[2:])
    assert lines[6].startswith("> **Note:** N=7 is too small for precise rates: the 95% interval is ±30 points")
    assert "\n> " not in tables.goodhart_table([BASE], note=False)


def test_per_test_grid_exact():
    text = tables.per_test_grid([BASE, SEL3])
    assert text.splitlines()[:4] == [
        "| Test | Expected | Baseline | 3-bit selective |",
        "|---|---|---|---|",
        "| discount_coupon | 15 | PASS | PASS |",
        "| time_duration | 4:15 PM | GAP (2:45 PM) | PASS |",
    ]
    assert text.splitlines()[4] == "| financial_compound | 1168 | FAIL (1080) | GAP (no answer) |"
    assert text.splitlines()[6] == "| unit_chain | 6.3 | GAP (8.7) | FAIL (8.7) |"


def test_per_test_grid_uses_uid_when_family_repeats_and_marks_missing():
    o1 = InstanceOutcome("f/1/0", "f", "1", True, True)
    o2 = InstanceOutcome("f/1/1", "f", "2", False, False, "7")
    grid = tables.per_test_grid([RunOutcomes("A", "All", (o1, o2)), RunOutcomes("B", "None", (o1,))])
    assert grid.splitlines()[2:] == ["| f/1/0 | 1 | PASS | PASS |", "| f/1/1 | 2 | FAIL (7) | – |"]


def test_bitwidth_table_exact():
    sel4 = _run("4-bit selective", "70-79", ["PASS", "GAP", "FAIL", "PASS", "GAP", "PASS", "PASS"],
                [None, "2:45 PM", "1080", None, "8.7", None, None], bits="4")
    lines = tables.bitwidth_table([BASE, UNI3, sel4], note=False).splitlines()
    assert lines[0] == "| Bitwidth | Config | Understanding | Execution | Gaps | vs Baseline |"
    assert lines[2].endswith("| 2/7 | - |")
    # execution: base 4/7, uniform 1/7 -> -43 pts; discordant b=3 (base only), c=0 -> p = 2·0.5^3 = 0.25
    assert lines[3] == ("| 3 | 3-bit uniform | 0/7 (0%) [0–35] | 1/7 (14%) [3–51] | 0/7 | "
                        "exec -43 pts (McNemar p=0.250), gaps -2 |")
    assert lines[4].endswith("| Identical outcomes |")


def test_comparison_table_rows_and_holm():
    text = tables.comparison_table(BASE, [SEL3, UNI3], n_boot=2000)
    lines = text.splitlines()
    assert lines[0].endswith("| McNemar p | Holm p (6 tests) |")
    rows = [line.split(" | ") for line in lines[2:8]]
    assert [r[1] for r in rows] == ["Understanding", "Execution", "Gap"] * 2
    # uniform vs baseline execution: 4/7 -> 1/7, discordant 3/0, exact p 0.25; Holm multiplies the
    # smallest of six p-values by 6, the next by 5, ...
    ex_uni = rows[4]
    assert ex_uni[2:4] == ["4/7", "1/7"] and ex_uni[6:8] == ["3/0", "0.250"]
    assert ex_uni[4].startswith("-43 [")
    assert ex_uni[5] == "–"  # one instance per family: the clustered bootstrap would be the plain one
    tests = tables.paired_tests(BASE, [SEL3, UNI3], n_boot=200)
    raw = sorted(t.mcnemar.p_value for t in tests)
    assert min(t.p_holm for t in tests) == pytest.approx(min(1.0, 6 * raw[0]))
    assert all(t.p_holm >= t.mcnemar.p_value for t in tests)
    assert "smallest possible McNemar p" in text


def test_markdown_table_validates_width():
    with pytest.raises(ValueError, match="cells"):
        tables.markdown_table(["a", "b"], [["1"]])


def test_seed_table_mean_std_over_seeds():
    outs = []
    # seed 0: 2/4 executed, 4/4 understood (2 gaps); seed 1: 3/4 executed, 2/4 understood (0 gaps)
    for seed, ex, un in [(0, [1, 1, 0, 0], [1, 1, 1, 1]), (1, [1, 1, 1, 0], [1, 1, 0, 0])]:
        for i in range(4):
            # Four equal-length options, the right one at i: both probes are above chance (6/8 and 5/8
            # against 1/4, p = 0.004 and 0.027) and above every surface rule (25%), so gaps are measurable.
            und = ChoiceDetail("letters", 4, i, i if un[i] else (i + 1) % 4, i, (10, 10, 10, 10))
            exe = ChoiceDetail("answers", 4, i, i if ex[i] else (i + 1) % 4, i, (2, 2, 2, 2))
            outs.append(InstanceOutcome(f"f/{seed}/{i}", "f", "1", bool(un[i]), bool(ex[i]), seed=seed,
                                        understanding_detail=und, execution_detail=exe))
    text = tables.seed_table([RunOutcomes("A", "All", tuple(outs))])
    # execution 50 and 75 -> 62.5 ± 17.7 (ddof=1); understanding 100, 50 -> 75.0 ± 35.4; gap rate 50, 0
    assert text.splitlines()[2] == "| A | 0,1 | 75.0 ± 35.4 (n=2) | 62.5 ± 17.7 (n=2) | 25.0 ± 35.4 (n=2) |"
    # Without option details nothing says the probes beat chance: the gap rate is no finding.
    bare = RunOutcomes("A", "All", tuple(InstanceOutcome(o.uid, o.family, o.expected, o.understood, o.executed,
                                                         seed=o.seed) for o in outs))
    assert tables.seed_table([bare]).splitlines()[2].endswith("| not measurable |")
    with pytest.raises(ValueError, match="no instance seeds"):
        tables.seed_table([BASE])


def test_tables_without_understanding_probe():
    outs = (InstanceOutcome("gsm8k/0/0", "gsm8k", "18", None, True, "18"),
            InstanceOutcome("gsm8k/0/1", "gsm8k", "3", None, False, "4"))
    run = RunOutcomes("base", "All", outs)
    assert tables.goodhart_table([run], note=False).splitlines()[2] == (
        "| base | All | – (no probe) | 1/2 (50%) [9–91]; chance 50%, p=0.750 | – | – (no probe) |")
    assert tables.per_test_grid([run]).splitlines()[2:] == [
        "| gsm8k/0/0 | 18 | RIGHT |", "| gsm8k/0/1 | 3 | WRONG (4) |"]
    metrics = [t.metric for t in tables.paired_tests(run, [run], n_boot=10)]
    assert metrics == ["Execution"]


def test_family_table():
    outs = (InstanceOutcome("a/0/0", "a", "1", True, False), InstanceOutcome("a/0/1", "a", "1", True, True),
            InstanceOutcome("b/0/0", "b", "1", False, False))
    lines = tables.family_table(RunOutcomes("r", "All", outs)).splitlines()
    assert lines[2] == "| a | 2 | 2/2 (100%) [34–100] | 1/2 (50%) [9–91] | 1/2 |"
    assert lines[3] == "| b | 1 | 0/1 (0%) [0–79] | 0/1 (0%) [0–79] | 0/1 |"
