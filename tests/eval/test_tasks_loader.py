"""Family files: user families from a directory, and malformed files naming file, field and expectation."""

import textwrap

import pytest

from calderalab.errors import TaskFamilyError
from calderalab.eval.tasks import generate_instances, load_families, load_family_file
from calderalab.eval.tasks.loader import LENGTH_FIX

GOOD = """\
id: apples
description: buy apples, pay with a bill, get change
question: "Apples cost ${price} each. You buy {n} apples and pay with a ${bill} bill. How much change do you get?"
variables:
  price: {type: decimal, min: 0.5, max: 2, step: 0.25}
  n: {type: int, min: 2, max: 9}
  bill: {type: choice, values: [20, 50]}
conditions:
  - "change > 0"
steps:
  - {name: cost, expr: "price * n", text: "Multiply ${price} by {n} apples"}
  - {name: change, expr: "bill - cost", text: "Subtract the cost from the ${bill} bill"}
answer: {type: number, decimals: 2}
mutations:
  - {id: add, kind: wrong_operation, replace: {change: {expr: "bill + cost", text: "Add the cost to the ${bill} bill"}}}
  - {id: cost_only, kind: partial, replace: {change: {expr: "cost", text: "Report the cost as the change"}}}
canonical:
  variables: {price: 1.25, n: 4, bill: 20}
  answer: "15"
"""


def write(tmp_path, text, name="fam.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_user_family_loads_and_generates(tmp_path):
    write(tmp_path, GOOD)
    families = load_families(extra_dirs=[tmp_path])
    assert "apples" in {f.id for f in families}
    apples = [f for f in families if f.id == "apples"]
    instances = generate_instances(apples, 20, seed=1, include_canonical=True)
    assert instances[0].answer == "15" and instances[0].canonical
    assert instances[0].answer_options and set(instances[0].answer_options) >= {"15", "25", "5"}
    for inst in instances:
        price, n, bill = (float(inst.variables[k]) for k in ("price", "n", "bill"))
        assert abs(float(inst.answer) - (bill - price * n)) < 1e-9


@pytest.mark.parametrize(
    "old, new, field, expectation",
    [
        ("id: apples", "id: Apples!", "'id'", "lower-case"),
        ("expr: \"price * n\"", "expr: \"price * m\"", "'steps[0].expr'", "unknown name(s) ['m']"),
        ("expr: \"price * n\"", "expr: \"price.real\"", "'steps[0].expr'", "Attribute is not allowed"),
        ("expr: \"price * n\"", "expr: \"open(price)\"", "'steps[0].expr'", "call of 'open'"),
        ("answer: {type: number, decimals: 2}", "answer: {decimals: 2}", "'answer.type'", "one of ['number', 'time', 'ordering']"),
        ("{type: int, min: 2, max: 9}", "{type: int, min: 9, max: 2}", "'variables.n.min/max/step'", "min ≤ max"),
        ("{type: int, min: 2, max: 9}", "{type: integer, min: 2, max: 9}", "'variables.n.type'", "one of ['int'"),
        ("{type: choice, values: [20, 50]}", "{type: choice, values: []}", "'variables.bill.values'", "non-empty"),
        ("price: 1.25, n: 4", "price: 1.3, n: 4", "'canonical.variables.price'", "inside the declared decimal domain"),
        ("answer: \"15\"", "answer: \"16\"", "'canonical.answer'", "expected '16'"),
        ("text: \"Multiply ${price} by {n} apples\"", "text: \"Multiply by {cost}\"", "'steps[0].text'", "unknown name(s) ['cost']"),
        ("kind: partial", "kind: sloppy", "'mutations[1].kind'", "one of ['wrong_order'"),
        ('{change: {expr: "cost"', '{nope: {expr: "cost"', "'mutations[1].replace.nope'", "a gold step name"),
        ("\"change > 0\"", "\"change > \"", "'conditions[0]'", "syntax error"),
        ("{n} apples and", "{n apples and", "'question'", "unbalanced brace"),
    ],
)
def test_malformed_family_names_file_field_and_expectation(tmp_path, old, new, field, expectation):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(TaskFamilyError) as err:
        load_family_file(path)
    message = str(err.value)
    assert str(path) in message and field in message and expectation in message, message


def test_missing_field_and_bad_yaml(tmp_path):
    path = write(tmp_path, GOOD.replace("mutations:", "old_mutations:"))
    with pytest.raises(TaskFamilyError, match=r"field 'mutations': expected a list of at least 2"):
        load_family_file(path)
    bad = write(tmp_path, "id: [unclosed\n", "bad.yaml")
    with pytest.raises(TaskFamilyError, match="not valid YAML"):
        load_family_file(bad)
    scalar = write(tmp_path, "just a string\n", "scalar.yaml")
    with pytest.raises(TaskFamilyError, match="top level"):
        load_family_file(scalar)


def test_too_many_steps_and_step_shadowing(tmp_path):
    steps = "".join(f"  - {{name: s{i}, expr: \"n + {i}\", text: \"step {i}\"}}\n" for i in range(7))
    text = GOOD.split("steps:\n")[0] + "steps:\n" + steps + "answer:" + GOOD.split("answer:", 1)[1]
    with pytest.raises(TaskFamilyError, match=r"field 'steps': expected between 2 and 6 steps"):
        load_family_file(write(tmp_path, text))
    with pytest.raises(TaskFamilyError, match="shadows the variable"):
        load_family_file(write(tmp_path, GOOD.replace("name: cost,", "name: n,")))


def test_wrong_answer_type_of_last_step(tmp_path):
    path = write(tmp_path, GOOD.replace("answer: {type: number, decimals: 2}", "answer: {type: time}"))
    with pytest.raises(TaskFamilyError, match=r"field 'answer.type'.*expected a time"):
        load_family_file(path)


def test_duplicate_id_across_files(tmp_path):
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD, "b.yaml")
    with pytest.raises(TaskFamilyError, match="duplicate family id 'apples'"):
        load_families(extra_dirs=[tmp_path])
    with pytest.raises(TaskFamilyError, match="duplicate family id 'discount_coupon'"):
        d = tmp_path / "dupdir"
        d.mkdir()
        (d / "dup.yaml").write_text(GOOD.replace("id: apples", "id: discount_coupon"))
        load_families(extra_dirs=[d])


def test_missing_tasks_dir(tmp_path):
    with pytest.raises(TaskFamilyError, match="tasks directory not found"):
        load_families(extra_dirs=[tmp_path / "nope"])


def test_unsatisfiable_conditions_give_clear_error(tmp_path):
    text = GOOD.replace('  - "change > 0"', '  - "change > 1000"').split("canonical:")[0]
    family = load_family_file(write(tmp_path, text))
    with pytest.raises(TaskFamilyError, match=r"field 'conditions': no sample out of \d+ satisfies"):
        generate_instances([family], 3, seed=0)


def test_small_domain_repeats_only_after_exhaustion(tmp_path):
    text = GOOD.replace("{type: decimal, min: 0.5, max: 2, step: 0.25}", "{type: choice, values: [1, 2]}")
    text = text.replace("{type: int, min: 2, max: 9}", "{type: int, min: 2, max: 3}").split("canonical:")[0]
    family = load_family_file(write(tmp_path, text))
    assert family.domain_size() == 8
    instances = generate_instances([family], 10, seed=0)
    keys = [repr(sorted(i.variables.items())) for i in instances]
    assert len(set(keys[:8])) == 8 and len(instances) == 10


COST_ONLY = '{id: cost_only, kind: partial, replace: {change: {expr: "cost", text: "Report the cost as the change"}}}'


@pytest.mark.parametrize(
    "mutation, field, count",
    [
        ("{id: cost_only, kind: partial, remove: [change]}", "'mutations[1].remove'", "removes gold steps ['change']"),
        (
            '{id: cost_only, kind: partial, steps: [{name: change, expr: "price * n", text: "Multiply ${price} by {n}"}]}',
            "'mutations[1].steps'",
            "has 1 steps but the gold plan has 2",
        ),
        (
            '{id: cost_only, kind: extra_step, steps: [{name: cost, expr: "price * n", text: "Multiply ${price} by {n}"}, '
            '{name: twice, expr: "2 * cost", text: "Double it"}, {name: change, expr: "bill - twice", text: "Subtract"}]}',
            "'mutations[1].steps'",
            "has 3 steps but the gold plan has 2",
        ),
    ],
)
def test_wrong_plan_with_another_step_count_is_refused(tmp_path, mutation, field, count):
    """A wrong plan shorter (or longer) than the gold one is told apart by its length alone."""
    path = write(tmp_path, GOOD.replace(COST_ONLY, mutation))
    with pytest.raises(TaskFamilyError) as err:
        load_family_file(path)
    message = str(err.value)
    for part in (str(path), field, "'cost_only'", count, LENGTH_FIX):
        assert part in message, message


def test_swap_keeps_the_step_count_and_loads(tmp_path):
    swapped = '{id: cost_only, kind: wrong_order, swap: [cost, change], replace: {change: {expr: "bill - price"}, cost: {expr: "change * n"}}}'
    family = load_family_file(write(tmp_path, GOOD.replace(COST_ONLY, swapped)))
    assert [s.name for s in family.mutations[1].steps] == ["change", "cost"]
    assert all(len(m.steps) == family.n_steps for m in family.mutations)
