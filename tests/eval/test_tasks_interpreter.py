"""The safe interpreter: exact arithmetic, whitelisted functions, and refusal of unsafe constructs."""

from fractions import Fraction

import pytest

from calderalab.errors import TaskFamilyError
from calderalab.eval.tasks.interpreter import EvalFailure, compile_expression
from calderalab.eval.tasks.values import ClockTime, Ordering, format_number, parse_clock, round_half_up


def ev(src, **env):
    return compile_expression(src, frozenset(env), "test").evaluate(env)


def test_arithmetic_is_exact_rational():
    assert ev("0.1 + 0.2") == Fraction(3, 10)
    assert ev("x * (1 + r / 100) ** n", x=Fraction(1000), r=Fraction(10), n=Fraction(2)) == Fraction(1210)
    assert ev("7 / 3") == Fraction(7, 3)
    assert ev("-x + 2", x=Fraction(5)) == -3


def test_functions_and_conditionals():
    assert ev("round_to(2.345, 2)") == Fraction("2.35")
    assert ev("round_to(-2.345, 2)") == Fraction("-2.35")
    assert ev("floor(7 / 2) + ceil(7 / 2)") == 7
    assert ev("max(1, 5, 3) - min(4, 2)") == 3
    assert ev("is_whole(x * 4)", x=Fraction(3, 4)) is True
    assert ev("1 if d == 'a' else 2", d="a") == 1
    assert ev("1 < x <= 3 and not x == 2", x=Fraction(3)) is True


def test_clock_functions():
    t = ev("add_minutes(clock(13, 30), 165)")
    assert t == ClockTime(16 * 60 + 15) and t.render() == "4:15 PM"
    assert ev("minutes_between(clock(8, 0), clock(16, 30))") == 510
    assert ev("within_day(add_minutes(clock(23, 0), 90))") is False
    assert ClockTime(12 * 60).render() == "12:00 PM" and ClockTime(0).render() == "12:00 AM"
    assert parse_clock("12:05 AM").minutes == 5 and parse_clock("13:30") == parse_clock("1:30 PM")


def test_orderings():
    names = ("A", "B", "C", "D")
    keys = tuple(Fraction(k) for k in (40, 30, 20, 10))
    assert ev("sort_by(p, k)", p=names, k=keys).render() == "D<C<B<A"
    assert ev("reverse(then(order(p[3], p[2]), p[1]))", p=names) == Ordering(("B", "C", "D"))
    assert ev("before(p[0], order(p[1]))", p=names).render() == "A<B"
    with pytest.raises(EvalFailure, match="tied"):
        ev("sort_by(p, (1, 1))", p=("A", "B"))


def test_weekday_and_distinct():
    assert ev("weekday_add('Friday', 10)") == "Monday"
    assert ev("distinct(1, 2, 3)") is True and ev("distinct(1, 2, 1)") is False


def test_sample_dependent_failures_are_evalfailure_not_family_errors():
    with pytest.raises(EvalFailure, match="division by zero"):
        ev("x / (y - y)", x=Fraction(1), y=Fraction(2))
    with pytest.raises(EvalFailure, match="out of range"):
        ev("p[5]", p=("A",))


@pytest.mark.parametrize(
    "src, fragment",
    [
        ("x.__class__", "Attribute is not allowed"),
        ("__import__('os')", "call of '__import__' is not allowed"),
        ("open('f')", "call of 'open' is not allowed"),
        ("eval('1')", "call of 'eval' is not allowed"),
        ("(lambda: 1)()", "is not allowed"),
        ("(lambda: 1)", "Lambda is not allowed"),
        ("[i for i in (1, 2)]", "ListComp is not allowed"),
        ("2 ** 100000", "exponent 100000"),
        ("2 ** 0.5", "exponent 0.5"),
        ("x[y]", "constant integer index"),
        ("min", "must be called"),
        ("round_to(x=1, places=2)", "keyword arguments"),
        ("y + 1", "unknown name(s) ['y']"),
        ("x +", "syntax error"),
        ("x if", "syntax error"),
        ("{1: 2}", "Dict is not allowed"),
        ("x @ x", "MatMult is not allowed"),
        ("x // 2", "FloorDiv is not allowed"),
        ("True", "constant True"),
    ],
)
def test_unsafe_or_unknown_constructs_are_refused(src, fragment):
    with pytest.raises(TaskFamilyError) as err:
        compile_expression(src, frozenset({"x"}), "fam.yaml: field 'steps[0].expr'")
    assert fragment in str(err.value)
    assert "fam.yaml: field 'steps[0].expr'" in str(err.value)


def test_runtime_exponent_bound():
    with pytest.raises(TaskFamilyError, match="exponent"):
        ev("2 ** n", n=Fraction(10**6))


def test_number_formatting_rounds_half_up_and_strips_zeros():
    assert format_number(Fraction(15)) == "15"
    assert format_number(Fraction("6.30")) == "6.3"
    assert format_number(Fraction(4, 3)) == "1.33"
    assert format_number(Fraction(5, 3)) == "1.67"
    assert format_number(Fraction("-2.005")) == "-2.01"
    assert format_number(Fraction("0.005")) == "0.01"
    assert round_half_up(Fraction("2.5"), 0) == 3
