"""No plan option is the centroid: "pick the plan sharing the most steps with the others" scores chance.

When every wrong plan was the gold plan with one step changed, the gold plan shared the most
(position, text) steps with the other options, and that rule scored 0.90 over 1280 instances
(chance 0.26). Options are now 2×2 factorials {gold, A, B, A+B} (A and B change disjoint steps), in
which every option shares equally many steps, with the gold plan's length rank balanced in blocks.
The planted `consensus` backend, run through the real runner, is at chance and not informative; a
planted family whose gold plan must stay the centroid is caught by the 'most shared steps' floor.
"""

from __future__ import annotations

import random
import textwrap
from collections.abc import Callable, Sequence
from fractions import Fraction

import pytest
from scipy.stats import binomtest

from calderalab.eval import planted
from calderalab.eval.runner import EvalConfig, evaluate_with
from calderalab.eval.scoring import plan_steps, step_overlap
from calderalab.eval.tasks import generate_instances, ladder_instances, load_family_file, load_ladders
from calderalab.eval.tasks.factorial import combined, least_central_subsets, touched_steps
from calderalab.eval.tasks.generate import _sample, _solve, build_instance, corner_sets, derive_rng
from calderalab.eval.tasks.options import blocked_rank, nearest_rank_choice
from calderalab.eval.validity import SHARED_STEPS_RULE, probe_validity, surface_heuristics

MAX_GAP = 0.06
MIN_P = 0.01


@pytest.fixture(scope="module")
def ladder():
    """10 per step count at seeds 0 and 1: 360 instances from 3 ladders × k = 1..6."""
    ladders = load_ladders()
    return ladder_instances(ladders, 10, seed=0) + ladder_instances(ladders, 10, seed=1)


def _pick(values: Sequence[int], rng: random.Random, top: bool) -> int:
    best = max(values) if top else min(values)
    return rng.choice([i for i, v in enumerate(values) if v == best])


RULES: dict[str, Callable[[Sequence[str]], Sequence[int]]] = {
    "most shared steps": step_overlap,
    "longest": lambda options: [len(o) for o in options],
    "shortest": lambda options: [-len(o) for o in options],
}


def _rule_hits(instances, rule: str) -> tuple[int, int, float]:
    """(hits, n, chance = mean 1/k) of a surface rule; ties broken uniformly at random."""
    rng = random.Random(1234)
    hits = sum(_pick(RULES[rule](i.plan_options), rng, True) == i.correct_option for i in instances)
    return hits, len(instances), sum(1 / len(i.plan_options) for i in instances) / len(instances)


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("suite", ["ordinary", "ladder"])
def test_surface_rules_score_chance(request, suite, rule):
    instances = request.getfixturevalue(suite)
    assert len(instances) >= (460 if suite == "ordinary" else 300)
    hits, n, chance = _rule_hits(instances, rule)
    assert abs(hits / n - chance) < MAX_GAP and binomtest(hits, n, chance).pvalue > MIN_P, (suite, rule, hits / n, chance)


def test_no_option_is_the_centroid(ordinary, ladder):
    for inst in ordinary + ladder:
        overlap = step_overlap(inst.plan_options)
        assert len(set(overlap)) == 1, (inst.uid, overlap)
        if inst.n_steps == 1:  # one step: every option differs from every other there
            assert set(overlap) == {0}


def _is_factorial(options: Sequence[str], gold: int) -> bool:
    """The options are {G, A, B, A+B}: A and B change disjoint steps of G, A+B takes both changes."""
    steps = [plan_steps(o) for o in options]
    others = [j for j in range(len(options)) if j != gold]
    diff = {j: {p for p, (g, s) in enumerate(zip(steps[gold], steps[j])) if g != s} for j in others}
    for both in others:
        a, b = (j for j in others if j != both)
        expected = [steps[a][p] if p in diff[a] else steps[b][p] if p in diff[b] else s for p, s in enumerate(steps[gold])]
        if diff[a] and diff[b] and not diff[a] & diff[b] and list(steps[both]) == expected:
            return True
    return False


def test_options_are_two_by_two_factorials(ordinary, ladder):
    for inst in ordinary + [i for i in ladder if i.n_steps > 1]:
        assert len(inst.plan_options) == 4 and _is_factorial(inst.plan_options, inst.correct_option), inst.uid


def test_answer_options_come_from_the_single_wrong_plans(families):
    """A+B's answer is never an answer option of its own: execution keeps the options it had."""
    for family in families:
        for attempt in range(1, 20):
            variables = _sample(family, derive_rng(0, family.id, "sample", attempt))
            inst = build_instance(family, variables, 0, attempt)
            if inst is not None:
                gold, wrong = _solve(family, variables)
                assert set(inst.answer_options) <= {gold} | {w.answer for w in wrong}, inst.uid


def test_the_gold_plan_reaches_every_length_rank_in_every_family(families, ordinary):
    """A factorial's gold plan is an extreme only when both changes lengthen (or both shorten) it; a
    family without such pairs would keep it in the middle, a cue of its own (the 'middle' rule)."""
    for family in families:
        mine = [i for i in ordinary if i.family == family.id]
        for rule in ("longest", "shortest"):
            hits, n, _ = _rule_hits(mine, rule)
            assert hits / n >= 0.1, (family.id, rule, hits, n)


def test_blocked_rank_visits_every_rank_once_per_block():
    ranks = [blocked_rank(lambda block: random.Random(block), i, 4) for i in range(40)]
    assert all(sorted(ranks[b : b + 4]) == [0, 1, 2, 3] for b in range(0, 40, 4))
    assert len({tuple(ranks[b : b + 4]) for b in range(0, 40, 4)}) > 1  # the order is drawn per block
    rng = random.Random(0)
    assert nearest_rank_choice(10, [[3, 4, 5], [11, 12, 13], [5, 11, 12]], rng, target=0) == 1
    assert nearest_rank_choice(10, [[3, 4, 5], [11, 12, 13], [5, 11, 12]], rng, target=1) == 2
    with pytest.raises(ValueError, match="target rank must be between 0 and 3"):
        nearest_rank_choice(10, [[3, 4, 5]], rng, target=4)


def _by_id(families, family_id, mutation_id):
    family = next(f for f in families if f.id == family_id)
    return family, next(m for m in family.mutations if m.id == mutation_id)


def test_a_plus_b_runs_both_changes_and_must_answer_differently(families):
    family, dollars = _by_id(families, "discount_coupon", "percent_as_dollars")  # discount = pct (step 1)
    _, added = _by_id(families, "discount_coupon", "coupon_added")  # final = sale + coupon (step 3)
    _, forget = _by_id(families, "discount_coupon", "forget_coupon")  # final = sale (step 3)
    assert touched_steps(family.steps, dollars.steps) == {0} and touched_steps(family.steps, added.steps) == {2}
    gold, wrong = _solve(family, family.canonical_variables)  # $40, 25% off, $15 coupon: 40 - 10 - 15 = 15
    found = corner_sets(family, family.canonical_variables, gold, wrong)
    corners = {(a.steps, b.steps): ab for a, b, ab in found}
    assert corners[(dollars.steps, added.steps)].answer == "30"  # 40 - 25 = 15, then + 15
    # 40 - 25 = 15, coupon kept: 15, the gold answer, so this A+B is not shown
    assert (dollars.steps, forget.steps) not in corners
    assert all(ab.answer not in {gold, a.answer, b.answer} for a, b, ab in found)


RENAMING = """\
id: renaming
question: "Start with {x}."
variables: {x: {type: int, min: 1, max: 9}}
steps:
  - {name: a, expr: "x", text: "Take {x}"}
  - {name: b, expr: "a + 1", text: "Add one"}
  - {name: c, expr: "b * 2", text: "Double it"}
answer: {type: number, decimals: 0}
mutations:
  - {id: rename, kind: wrong_base, steps: [{name: other, expr: "x + 5", text: "Take {x} plus five"},
                                           {name: b, expr: "x + 1", text: "Add one to {x}"},
                                           {name: c, expr: "b * 2", text: "Double it"}]}
  - {id: triple_a, kind: wrong_factor, replace: {c: {expr: "a * 3", text: "Triple the start"}}}
  - {id: add_two, kind: wrong_operation, replace: {b: {expr: "a + 2", text: "Add two"}}}
"""


def test_changes_to_a_common_step_or_to_a_step_another_reads_do_not_combine(families, tmp_path):
    family, added = _by_id(families, "discount_coupon", "coupon_added")
    _, forget = _by_id(families, "discount_coupon", "forget_coupon")
    _, first = _by_id(families, "discount_coupon", "coupon_first")  # rewrites all three steps
    names = frozenset(v.name for v in family.variables)
    assert combined(family.steps, added.steps, forget.steps, names) is None  # both change step 3
    assert combined(family.steps, first.steps, added.steps, names) is None
    assert combined(family.steps, added.steps, family.steps, names) is None  # the gold plan changes nothing
    path = tmp_path / "renaming.yaml"
    path.write_text(RENAMING)
    family = load_family_file(path)
    rename, triple, two = family.mutations
    assert touched_steps(family.steps, rename.steps) == {0, 1} and touched_steps(family.steps, triple.steps) == {2}
    # disjoint, but "Triple the start" reads step 1's value, which the renaming plan no longer computes
    assert combined(family.steps, rename.steps, triple.steps, frozenset({"x"})) is None
    both = combined(family.steps, two.steps, triple.steps, frozenset({"x"}))
    assert [s.text.source for s in both] == ["Take {x}", "Add two", "Triple the start"]


def test_the_fallback_prefers_arms_that_change_the_same_step():
    gold = "Step 1: a. Step 2: b. Step 3: c."
    arms = ["Step 1: X. Step 2: b. Step 3: c.", "Step 1: a. Step 2: Y. Step 3: c.",
            "Step 1: a. Step 2: b. Step 3: Z.", "Step 1: a. Step 2: b. Step 3: W."]
    assert least_central_subsets(gold, arms, 3, 2) == [(2, 3)]  # gold, Z, W: all share 2 steps with each


PLANTED_CENTROID = """\
id: planted_centroid
question: "You have {x} apples, buy {y} more and eat {z}. How many apples are left?"
variables:
  x: {type: int, min: 10, max: 60}
  y: {type: int, min: 2, max: 9}
  z: {type: int, min: 2, max: 9}
steps:
  - {name: start, expr: "x", text: "Start from the {x} apples"}
  - {name: bought, expr: "start + y", text: "Add the {y} apples bought"}
  - {name: left, expr: "bought - z", text: "Subtract the {z} apples eaten"}
answer: {type: number, decimals: 0}
mutations:  # each changes two steps and every two share one: no disjoint pair, so no 2x2 factorial
  - {id: m01, kind: wrong_operation, replace: {start: {expr: "x + 1", text: "Start from {x} and one more"},
                                              bought: {expr: "start - y", text: "Subtract the {y} bought"}}}
  - {id: m12, kind: wrong_operation, replace: {bought: {expr: "start * y", text: "Multiply by {y} bought ones"},
                                              left: {expr: "bought + z", text: "Add the {z} apples eaten"}}}
  - {id: m02, kind: wrong_operation, replace: {start: {expr: "x * 2", text: "Start from {x} times two"},
                                              left: {expr: "bought * z", text: "Multiply by the {z} eaten"}}}
"""


def _run(backend, instances, scoring):
    run = evaluate_with(backend, instances, EvalConfig(scoring=scoring))
    return run.outcomes(), probe_validity(run.outcomes(), "understanding")


@pytest.mark.parametrize("scoring", ["choice", "cloze", "generate"])
def test_a_consensus_scorer_is_at_chance_and_not_informative(ordinary, ladder, scoring):
    outcomes, und = _run(planted.consensus(), ordinary + ladder, scoring)
    assert und.n == len(ordinary) + len(ladder) and not und.informative
    assert all(o.understanding_detail.overlap for o in outcomes)  # the runner stores overlaps in every mode
    assert abs(und.rate - und.chance) < MAX_GAP and und.p_value > MIN_P, (und.rate, und.chance, und.p_value)
    rules = surface_heuristics([o.understanding_detail for o in outcomes])
    assert abs(rules[SHARED_STEPS_RULE] - und.chance) < MAX_GAP


def test_a_planted_centroid_family_is_flagged_by_the_shared_steps_floor(tmp_path):
    path = tmp_path / "planted_centroid.yaml"
    path.write_text(textwrap.dedent(PLANTED_CENTROID))
    family = load_family_file(path)
    instances = generate_instances([family], 300, seed=0)
    for inst in instances[:20]:
        variables = {v.name: Fraction(inst.variables[v.name]) for v in family.variables}
        gold, wrong = _solve(family, variables)
        assert corner_sets(family, variables, gold, wrong) == []
    outcomes, und = _run(planted.consensus(), instances, "choice")
    rules = surface_heuristics([o.understanding_detail for o in outcomes])
    assert rules[SHARED_STEPS_RULE] == 1.0 and max(rules["longest option"], rules["shortest option"]) < 0.9
    assert und.rate == 1.0 and und.floor == 1.0 and und.floor_rule == SHARED_STEPS_RULE
    assert not und.informative and "surface floor" in und.verdict()
    hits, n, chance = _rule_hits(instances, "most shared steps")
    assert hits == n and binomtest(hits, n, chance).pvalue < 1e-6

