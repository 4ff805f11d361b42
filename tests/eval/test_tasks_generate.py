"""Built-in families: canonical answers, deterministic distinct generation, wrong plans, rendering."""

import subprocess
import sys

import pytest

from calderalab.eval.parse import is_correct
from calderalab.eval.tasks import CANONICAL_FAMILIES, canonical_instances, generate_instances, load_families

REPORT_ANSWERS = {
    "discount_coupon": "15",
    "time_duration": "4:15 PM",
    "financial_compound": "1168",
    "recipe_scale": "3",
    "unit_chain": "6.3",
    "transitive_order": "D<C<B<A",
    "task_schedule": "9:30 AM",
}


@pytest.fixture(scope="module")
def families():
    return load_families()


@pytest.fixture(scope="module")
def hundred_and_one(families):
    return generate_instances(families, 101, seed=7)


def test_canonical_seven_reproduce_the_report(families):
    instances = canonical_instances(families)
    assert [i.family for i in instances] == list(CANONICAL_FAMILIES)
    assert {i.family: i.answer for i in instances} == REPORT_ANSWERS
    assert all(i.canonical and i.index == 0 for i in instances)


def test_canonical_wrong_answers_include_the_reports_mistakes(families):
    by_family = {i.family: i for i in canonical_instances(families)}
    assert "2:45 PM" in by_family["time_duration"].answer_options  # the duration alone
    assert "1080" in by_family["financial_compound"].answer_options  # one year only


def test_at_least_twenty_families_with_two_to_six_steps(families):
    assert len(families) >= 20
    assert len({f.id for f in families}) == len(families)
    assert all(2 <= f.n_steps <= 6 for f in families)
    assert {f.answer.type for f in families} == {"number", "time", "ordering"}


def test_101_valid_distinct_instances_per_family(families, hundred_and_one):
    for family in families:
        mine = [i for i in hundred_and_one if i.family == family.id]
        assert len(mine) == 101
        assert [i.index for i in mine] == list(range(101))
        keys = {repr(sorted(i.variables.items())) for i in mine}
        assert len(keys) == min(101, family.domain_size()), family.id


def test_instances_are_self_consistent(hundred_and_one):
    for inst in hundred_and_one:
        assert 3 <= len(inst.plan_options) <= 4
        assert len(set(inst.plan_options)) == len(inst.plan_options)
        assert inst.plan_options[inst.correct_option] == " ".join(
            f"Step {k}: {s}." for k, s in enumerate(inst.steps, 1)
        )
        assert inst.answer_options[inst.correct_answer_option] == inst.answer
        assert inst.answer_options.count(inst.answer) == 1  # every wrong plan's answer differs from gold
        assert len(set(inst.answer_options)) == len(inst.answer_options) >= 3
        assert len(inst.steps) == inst.n_steps
        assert inst.question and inst.question in inst.plan_question
        assert "{" not in inst.question and "}" not in inst.question
        # the parser reads back the canonical answer string exactly
        assert is_correct(f"Answer: {inst.answer}", inst.answer, inst.answer_type, inst.tolerance)


def test_generation_is_deterministic_and_seed_dependent(families):
    first = generate_instances(families[:5], 20, seed=3)
    assert first == generate_instances(list(reversed(families[:5])), 20, seed=3)
    other = generate_instances(families[:5], 20, seed=4)
    assert [i.variables for i in first] != [i.variables for i in other]


def test_generation_independent_of_hash_seed():
    code = (
        "from calderalab.eval.tasks import load_families, generate_instances;"
        "print([ (i.question, i.plan_options, i.answer_options) for i in generate_instances(load_families(), 3, seed=11)])"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": h, "PYTHONPATH": ":".join(sys.path)}
        ).stdout
        for h in ("1", "2")
    }
    assert len(outs) == 1


def test_include_canonical_puts_it_first(families):
    instances = generate_instances(families, 7, seed=5, include_canonical=True)
    for name, answer in REPORT_ANSWERS.items():
        mine = [i for i in instances if i.family == name]
        assert mine[0].canonical and mine[0].answer == answer and mine[0].seed == 5
        assert not any(i.canonical for i in mine[1:])
        assert len({repr(sorted(i.variables.items())) for i in mine}) == 7


def test_options_shuffled_by_seed(families):
    instances = generate_instances(families, 40, seed=0)
    # with 4 options the correct plan must not sit at a fixed position
    assert len({i.correct_option for i in instances}) >= 3
    assert len({i.correct_answer_option for i in instances}) >= 3


def test_bad_counts_rejected(families):
    with pytest.raises(ValueError, match="n_per_family"):
        generate_instances(families, -1, seed=0)
    assert generate_instances(families, 0, seed=0) == []
