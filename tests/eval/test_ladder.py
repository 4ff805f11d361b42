"""Difficulty ladders: expansion to k-step families, exact answers, wrong plans, determinism, errors, length cues."""

import math
import re
import textwrap
from fractions import Fraction

import pytest

from calderalab.errors import TaskFamilyError
from calderalab.eval.tasks import ladder_instances, load_ladder_file, load_ladders
from calderalab.eval.tasks.generate import build_instance, format_answer, render_plan, run_plan
from calderalab.eval.tasks.loader import builtin_family_paths
from calderalab.eval.tasks.values import ClockTime, format_number, parse_clock

BUILTIN = ("currency_hops", "day_trip", "storeroom")


@pytest.fixture(scope="module")
def ladders():
    return load_ladders()


@pytest.fixture(scope="module")
def by_id(ladders):
    return {lad.id: lad for lad in ladders}


@pytest.fixture(scope="module")
def sixty(ladders):
    return ladder_instances(ladders, 20, seed=5)  # 3 ladders x 6 steps x 20 = 360 instances


# --- reference solvers written without the interpreter: the k-step answer from an instance's variables ---


def _storeroom(v, k):
    ops = [
        lambda x: x + v["a"],
        lambda x: x / 2,
        lambda x: x - v["b"],
        lambda x: x * v["m"],
        lambda x: x - x / 3,
        lambda x: x - v["t"] * v["p"],
    ]
    x = Fraction(v["n0"])
    for op in ops[:k]:
        x = op(x)
    return format_number(x, 2)


def _day_trip(v, k):
    ops = [
        lambda t: t + 60 * v["h1"] + v["m1"],
        lambda t: t + v["walk"],
        lambda t: 60 * math.ceil(t / 60),
        lambda t: t + int(Fraction(v["hc"]) * 60),
        lambda t: t + 60 * v["mh"] + 30,
        lambda t: t + v["ride"] + v["jam"],
    ]
    t = parse_clock(v["t0"]).minutes
    for op in ops[:k]:
        t = op(t)
    return ClockTime(t).render()


def _currency_hops(v, k):
    x = Fraction(v["c0"])
    for i in range(1, k + 1):
        rate = v[f"r{i}"]
        x = x * rate if i % 2 else x / rate  # odd hops quote "new per old", even hops "old per new"
    return format_number(x, 2)


REFERENCE = {"storeroom": _storeroom, "day_trip": _day_trip, "currency_hops": _currency_hops}


def test_builtin_ladders_expand_to_one_family_per_step_count(ladders):
    assert tuple(lad.id for lad in ladders) == BUILTIN
    for ladder in ladders:
        assert ladder.max_steps == 6
        families = ladder.families()
        assert [f.id for f in families] == [f"{ladder.id}_k{k}" for k in range(1, 7)]
        for k, family in enumerate(families, 1):
            assert family.n_steps == k
            assert [s.name for s in family.steps] == [r.name for r in ladder.rungs[:k]]
            if k > 1:  # a true ladder: the k-step family keeps the k-1 steps of the one before
                assert [s.expr.source for s in family.steps[:-1]] == [s.expr.source for s in families[k - 2].steps]
            assert all(len(m.steps) == k for m in family.mutations)
            assert len(family.mutations) == 2 * k + (k - 1)  # two wrong variants per step + adjacent swaps


def test_family_k_out_of_range_is_an_error(by_id):
    for bad in (0, 7, 1.0, True):
        with pytest.raises(ValueError, match="k = 1 … 6"):
            by_id["storeroom"].family(bad)


HAND_COMPUTED = {  # the canonical variables of each file, worked out by hand for k = 1 … 6
    "storeroom": ["28", "14", "11", "33", "22", "12"],  # 20+8, /2, -3, *3, -1/3, -2*5
    "day_trip": ["11:25 AM", "11:45 AM", "12:00 PM", "1:30 PM", "4:00 PM", "4:55 PM"],  # 9:40 +1:45 +0:20 ...
    "currency_hops": ["360", "90", "450", "225", "900", "300"],  # 120 *3 /4 *5 /2 *4 /3
}


@pytest.mark.parametrize("ladder_id", BUILTIN)
def test_canonical_answers_match_hand_computed_values(by_id, ladder_id):
    ladder = by_id[ladder_id]
    for k, expected in enumerate(HAND_COMPUTED[ladder_id], 1):
        family = ladder.family(k)
        inst = build_instance(family, family.canonical_variables, 0, 0, canonical=True)
        assert inst.answer == expected and inst.n_steps == k
        assert REFERENCE[ladder_id](inst.variables, k) == expected


def test_hand_computed_wrong_answers_are_offered(by_id):
    def options(ladder_id, k):
        family = by_id[ladder_id].family(k)
        return build_instance(family, family.canonical_variables, 0, 0).answer_options

    assert set(options("storeroom", 1)) == {"28", "12", "8"}  # 20+8, 20-8, only the 8 new boxes
    assert "56" in options("storeroom", 2)  # doubled instead of halved
    assert set(options("day_trip", 1)) == {"11:25 AM", "12:05 PM", "7:55 AM"}  # 1 h 45 min as 145 min; subtracted
    assert set(options("currency_hops", 1)) == {"360", "40", "123"}  # *3, /3, +3


def test_every_instance_matches_the_reference_solver(sixty):
    assert len(sixty) >= 300
    for inst in sixty:
        ladder_id, k = inst.family.rsplit("_k", 1)
        assert inst.n_steps == int(k)
        assert inst.answer == REFERENCE[ladder_id](inst.variables, inst.n_steps), inst.uid


def test_k_step_answer_is_step_k_of_the_longest_chain(by_id):
    """Same variables: the k-step family's answer is the value the 6-step gold chain has after step k."""
    for ladder in by_id.values():
        full = ladder.family(6)
        variables = dict(full.canonical_variables)
        env = run_plan(full.steps, variables)
        for k in range(1, 7):
            family = ladder.family(k)
            own = {v.name: variables[v.name] for v in family.variables}
            assert format_answer(family, run_plan(family.steps, own)[family.steps[-1].name]) == format_answer(
                full, env[ladder.rungs[k - 1].name]
            )


def test_wrong_plans_keep_k_steps_and_change_the_answer(sixty, by_id):
    for inst in sixty:
        k = inst.n_steps
        assert len(inst.plan_options) == (3 if k == 1 else 4)
        assert len(set(inst.plan_options)) == len(inst.plan_options)
        for option in inst.plan_options:
            assert [f"Step {i}:" in option for i in range(1, k + 2)] == [True] * k + [False]
        assert inst.answer_options.count(inst.answer) == 1
    # on the canonical variables every wrong plan that generation may offer differs from gold
    for ladder in by_id.values():
        for family in ladder.families():
            gold = build_instance(family, family.canonical_variables, 0, 0)
            kept = 0
            for mutation in family.mutations:
                answer = format_answer(family, run_plan(mutation.steps, family.canonical_variables)[mutation.steps[-1].name])
                if render_plan(mutation.steps, family.canonical_variables) in gold.plan_options:
                    assert answer != gold.answer, (family.id, mutation.id)
                kept += answer != gold.answer
            assert kept >= 2


def _step_texts(option):
    return re.findall(r"Step \d+: (.*?)\.(?= Step \d+:|$)", option)


def test_adjacent_swaps_are_offered_where_order_matters(sixty):
    """storeroom mixes + - * /, so some wrong plans are the gold steps in another order."""
    swaps = [
        option
        for inst in sixty
        if inst.family.startswith("storeroom") and inst.n_steps >= 2
        for i, option in enumerate(inst.plan_options)
        if i != inst.correct_option and sorted(_step_texts(option)) == sorted(inst.steps)
    ]
    assert len(swaps) >= 10


def test_generation_is_deterministic_and_seed_dependent(ladders):
    first = ladder_instances(ladders, 4, seed=11, steps=[1, 3])
    assert first == ladder_instances(list(reversed(ladders)), 4, seed=11, steps=[3, 1])
    assert first != ladder_instances(ladders, 4, seed=12, steps=[1, 3])


def test_each_ladder_at_every_k_yields_n_instances(sixty):
    uids = [inst.uid for inst in sixty]
    assert len(set(uids)) == len(uids)
    for ladder_id in BUILTIN:
        for k in range(1, 7):
            mine = [i for i in sixty if i.family == f"{ladder_id}_k{k}"]
            assert len(mine) == 20 and {i.n_steps for i in mine} == {k}
            assert len({repr(sorted(i.variables.items())) for i in mine}) == 20


def _heuristic_rate(instances, pick):
    """Accuracy of always choosing the longest (or shortest) plan text; ties share the credit."""
    total = 0.0
    for inst in instances:
        lengths = [len(o) for o in inst.plan_options]
        tied = [i for i, n in enumerate(lengths) if n == pick(lengths)]
        total += (inst.correct_option in tied) / len(tied)
    return total / len(instances)


@pytest.mark.parametrize("pick", [max, min], ids=["longest", "shortest"])
def test_plan_length_gives_nothing_away(sixty, pick):
    chance = sum(1 / len(i.plan_options) for i in sixty) / len(sixty)
    assert _heuristic_rate(sixty, pick) - chance < 0.08
    for k in range(1, 7):  # nor at any single step count, where the curves are read
        at_k = [i for i in sixty if i.n_steps == k]
        assert _heuristic_rate(at_k, pick) - sum(1 / len(i.plan_options) for i in at_k) / len(at_k) < 0.15, k


def test_a_planted_length_cue_is_detected(sixty):
    """The heuristic check above can fail: making the gold plan longer is caught."""
    from dataclasses import replace

    padded = [replace(i, plan_options=tuple(o + " Check." if j == i.correct_option else o for j, o in enumerate(i.plan_options))) for i in sixty]
    assert _heuristic_rate(padded, max) > 0.95


# --- user ladders and malformed files ---

GOOD = """\
id: piggy_bank
description: coins in a piggy bank
intro: "A piggy bank holds {c} coins."
variables:
  c: {type: int, min: 10, max: 40}
start: "c"
question: "How many coins are in the bank now?"
answer: {type: number, decimals: 2}
steps:
  - name: added
    variables: {a: {type: int, min: 2, max: 9}}
    says: "Then Sam puts in {a} coins."
    expr: "prev + a"
    text: "Add the {a} coins to the total"
    wrong:
      - {id: sub, kind: wrong_operation, expr: "prev - a", text: "Take the {a} coins off the total"}
      - {id: only, kind: partial, expr: "a", text: "Count only the {a} new coins"}
  - name: doubled
    says: "Then his aunt doubles what is in the bank."
    expr: "prev * 2"
    text: "Double the number of coins"
    wrong:
      - {id: halve, kind: wrong_operation, expr: "prev / 2", text: "Halve the number of coins"}
      - {id: plus_two, kind: wrong_factor, expr: "prev + 2", text: "Add 2 to the number of coins"}
  - name: spent
    variables: {s: {type: int, min: 1, max: 9}}
    says: "Then Sam spends {s} coins."
    expr: "prev - s"
    text: "Subtract the {s} spent coins"
    conditions: ["spent > 0"]
    wrong:
      - {id: add, kind: wrong_operation, expr: "prev + s", text: "Add the {s} spent coins back"}
      - {id: twice, kind: wrong_factor, expr: "prev - 2 * s", text: "Subtract twice the {s} coins"}
canonical:
  variables: {c: 10, a: 4, s: 3}
  answers: ["14", "28", "25"]
"""


def write(tmp_path, text, name="ladder.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_user_ladder_from_a_directory(tmp_path):
    write(tmp_path, GOOD)
    ladders = load_ladders(extra_dirs=[tmp_path])
    assert [lad.id for lad in ladders] == sorted([*BUILTIN, "piggy_bank"])
    piggy = [lad for lad in ladders if lad.id == "piggy_bank"]
    instances = ladder_instances(piggy, 5, seed=2, steps=range(1, 4))
    assert [i.family for i in instances] == [f"piggy_bank_k{k}" for k in (1, 2, 3) for _ in range(5)]
    for inst in instances:
        v, k = inst.variables, inst.n_steps
        expected = v["c"] + v["a"] if k == 1 else 2 * (v["c"] + v["a"]) - (v["s"] if k == 3 else 0)
        assert inst.answer == str(expected)
        assert inst.question.startswith(f"A piggy bank holds {v['c']} coins. Then Sam puts in {v['a']} coins.")
        assert inst.question.count("Then") == k
    with pytest.raises(ValueError, match=r"has steps k = 1 … 3, not \[4, 5, 6\]"):
        ladder_instances(piggy, 5)


def test_duplicate_and_missing_directories(tmp_path):
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD, "b.yaml")
    with pytest.raises(TaskFamilyError, match="duplicate ladder id 'piggy_bank'"):
        load_ladders(extra_dirs=[tmp_path])
    with pytest.raises(TaskFamilyError, match="tasks directory not found"):
        load_ladders(extra_dirs=[tmp_path / "nope"])


def test_one_tasks_dir_may_hold_families_and_ladders(tmp_path):
    """--tasks-dir is handed to both loaders: each takes its own kind of file and leaves the other."""
    from calderalab.eval.tasks import load_families

    write(tmp_path, GOOD, "ladder.yaml")
    family = next(p for p in builtin_family_paths() if p.stem == "discount_coupon").read_text()
    (tmp_path / "family.yaml").write_text(family.replace("id: discount_coupon", "id: my_coupon"))
    assert [lad.id for lad in load_ladders(extra_dirs=[tmp_path])].count("piggy_bank") == 1
    ids = [f.id for f in load_families(extra_dirs=[tmp_path])]
    assert "my_coupon" in ids and "piggy_bank" not in ids and len(ids) == len(load_families()) + 1


@pytest.mark.parametrize(
    "old, new, field, expectation",
    [
        ('expr: "prev * 2"', 'expr: "c * 2"', "'steps[1].expr'", "reads 'prev'"),
        ('expr: "prev + a"', 'expr: "prev + s"', "'steps[0].expr'", "unknown name(s) ['s']"),
        ("Count only the {a} new coins", "Count only the {a} new coins that Sam put in today", "'steps[0].wrong[1].text'", "within 25% of the length"),
        ("      - {id: twice, kind: wrong_factor, expr: \"prev - 2 * s\", text: \"Subtract twice the {s} coins\"}\n", "", "'steps[2].wrong'", "at least 2 wrong variants"),
        ("kind: partial", "kind: sloppy", "'steps[0].wrong[1].kind'", "one of ['wrong_order'"),
        ("{s: {type: int, min: 1, max: 9}}", "{a: {type: int, min: 1, max: 9}}", "'steps[2].variables.a'", "a new name"),
        ("{s: {type: int, min: 1, max: 9}}", "{prev: {type: int, min: 1, max: 9}}", "'steps[2].variables.prev'", "a new name"),
        ("{s: {type: int, min: 1, max: 9}}", "{s: {type: int, min: 9, max: 1}}", "'steps[2].variables.s.min/max/step'", "min ≤ max"),
        ("name: doubled", "name: added", "'steps[1].name'", "a new name"),
        ('text: "Double the number of coins"', 'text: "Double to {doubled}"', "'steps[1].text'", "unknown name(s) ['doubled']"),
        ('"spent > 0"', '"spent > "', "'steps[2].conditions[0]'", "syntax error"),
        ('answers: ["14", "28", "25"]', 'answers: ["14", "28"]', "'canonical.answers'", "a list of 3 answers"),
        ('answers: ["14", "28", "25"]', 'answers: ["14", "29", "25"]', "'canonical.answer'", "expected '29'"),
        ("{c: 10, a: 4, s: 3}", "{c: 10, a: 4}", "'canonical.variables'", "missing ['s']"),
        ('question: "How many coins are in the bank now?"\n', "", "'question'", "a final question"),
        ('start: "c"', 'start: "c + prev"', "'start'", "unknown name(s) ['prev']"),
        ("id: piggy_bank", "id: Piggy Bank", "'id'", "lower-case"),
    ],
)
def test_malformed_ladder_names_file_field_and_expectation(tmp_path, old, new, field, expectation):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(TaskFamilyError) as err:
        load_ladder_file(path)
    message = str(err.value)
    assert str(path) in message and field in message and expectation in message, message


def test_step_count_bounds_and_bad_yaml(tmp_path):
    one_step = GOOD.split("  - name: doubled")[0] + 'canonical:\n  variables: {c: 10, a: 4}\n  answers: ["14"]\n'
    with pytest.raises(TaskFamilyError, match=r"field 'steps': expected a list of 2 to 6 steps"):
        load_ladder_file(write(tmp_path, one_step))
    with pytest.raises(TaskFamilyError, match="not valid YAML"):
        load_ladder_file(write(tmp_path, "id: [unclosed\n", "bad.yaml"))
    with pytest.raises(TaskFamilyError, match="top level"):
        load_ladder_file(write(tmp_path, "just a string\n", "scalar.yaml"))
