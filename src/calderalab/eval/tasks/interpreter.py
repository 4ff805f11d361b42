"""The safe expression interpreter that runs task-family steps and conditions. No torch.

Family files are data written by users, so their expressions are never `eval`ed: each is parsed
with `ast` and checked against a whitelist once, at load time (`compile_expression`), then
walked by `Expression.evaluate` with exact values (`values.py`). Allowed: numbers, strings,
names of known variables/steps, `x[0]` with a constant index, + - * / ** (integer exponent
≤ MAX_EXPONENT), unary minus, comparisons, and/or/not, `a if c else b`, tuples/lists, and calls
of the functions in FUNCTIONS. Everything else (attributes, imports, lambdas, comprehensions,
keyword arguments, other calls) is refused with a TaskFamilyError naming where it was found.

Two kinds of failure: a malformed expression (TaskFamilyError, the family is broken) and a
failure that depends on sampled values, such as a division by zero (EvalFailure: generation
rejects that sample and draws another).
"""

from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Mapping

from calderalab.errors import TaskFamilyError
from calderalab.eval.tasks.values import MINUTES_PER_DAY, ClockTime, Ordering, round_half_up

MAX_EXPONENT = 64
# Bound on numerator/denominator size so a hostile family cannot exhaust memory.
MAX_DIGITS = 200
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class EvalFailure(ValueError):
    """A sample-dependent evaluation failure (division by zero, tie in an ordering ...)."""


def _number(x: Any, fn: str) -> Fraction:
    if isinstance(x, bool) or not isinstance(x, (int, Fraction)):
        raise EvalFailure(f"{fn}: expected a number, got {x!r}")
    return Fraction(x)


def _integer(x: Any, fn: str) -> int:
    value = _number(x, fn)
    if value.denominator != 1:
        raise EvalFailure(f"{fn}: expected a whole number, got {value}")
    return value.numerator


def _clock(x: Any, fn: str) -> ClockTime:
    if not isinstance(x, ClockTime):
        raise EvalFailure(f"{fn}: expected a clock time, got {x!r}")
    return x


def _fn_clock(hour: Any, minute: Any = 0) -> ClockTime:
    return ClockTime(_integer(hour, "clock") * 60 + _integer(minute, "clock"))


def _fn_add_minutes(t: Any, minutes: Any) -> ClockTime:
    return ClockTime(_clock(t, "add_minutes").minutes + _integer(minutes, "add_minutes"))


def _fn_minutes_between(start: Any, end: Any) -> Fraction:
    return Fraction(_clock(end, "minutes_between").minutes - _clock(start, "minutes_between").minutes)


def _fn_within_day(t: Any) -> bool:
    return 0 <= _clock(t, "within_day").minutes < MINUTES_PER_DAY


def _fn_sort_by(names: Any, keys: Any) -> Ordering:
    if not isinstance(names, tuple) or not isinstance(keys, tuple) or len(names) != len(keys):
        raise EvalFailure("sort_by: expected two tuples of equal length (names, keys)")
    numeric = [_number(k, "sort_by") for k in keys]
    if len(set(numeric)) != len(numeric):
        raise EvalFailure("sort_by: tied keys give no strict ordering")
    return Ordering(tuple(str(n) for _, n in sorted(zip(numeric, names))))


def _fn_order(*names: Any) -> Ordering:
    return Ordering(tuple(str(n) for n in names))


def _fn_reverse(o: Any) -> Ordering:
    if not isinstance(o, Ordering):
        raise EvalFailure(f"reverse: expected an ordering, got {o!r}")
    return Ordering(o.items[::-1])


def _fn_then(o: Any, name: Any) -> Ordering:
    """Append `name` as the new largest element of ordering `o`."""
    if not isinstance(o, Ordering):
        raise EvalFailure(f"then: expected an ordering, got {o!r}")
    return Ordering(o.items + (str(name),))


def _fn_before(name: Any, o: Any) -> Ordering:
    """Prepend `name` as the new smallest element of ordering `o`."""
    if not isinstance(o, Ordering):
        raise EvalFailure(f"before: expected an ordering, got {o!r}")
    return Ordering((str(name),) + o.items)


def _fn_weekday_add(day: Any, days: Any) -> str:
    if day not in WEEKDAYS:
        raise EvalFailure(f"weekday_add: {day!r} is not a weekday name")
    return WEEKDAYS[(WEEKDAYS.index(day) + _integer(days, "weekday_add")) % 7]


def _fn_distinct(*values: Any) -> bool:
    return len(set(values)) == len(values)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "round_to": lambda x, places: round_half_up(_number(x, "round_to"), _integer(places, "round_to")),
    "floor": lambda x: Fraction(math.floor(_number(x, "floor"))),
    "ceil": lambda x: Fraction(math.ceil(_number(x, "ceil"))),
    "abs": lambda x: abs(_number(x, "abs")),
    "min": lambda *xs: min(_number(x, "min") for x in xs),
    "max": lambda *xs: max(_number(x, "max") for x in xs),
    "is_whole": lambda x: _number(x, "is_whole").denominator == 1,
    "clock": _fn_clock,
    "add_minutes": _fn_add_minutes,
    "minutes_between": _fn_minutes_between,
    "within_day": _fn_within_day,
    "order": _fn_order,
    "sort_by": _fn_sort_by,
    "reverse": _fn_reverse,
    "then": _fn_then,
    "before": _fn_before,
    "weekday_add": _fn_weekday_add,
    "distinct": _fn_distinct,
}

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_CMPOPS: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_ALLOWED_NODES = (
    ast.Expression, ast.Constant, ast.Name, ast.Load, ast.BinOp, ast.UnaryOp, ast.USub, ast.UAdd, ast.Not,
    ast.Compare, ast.BoolOp, ast.And, ast.Or, ast.IfExp, ast.Call, ast.Tuple, ast.List, ast.Subscript,
    *_BINOPS, *_CMPOPS,
)  # fmt: skip


@dataclass(frozen=True)
class Expression:
    """A validated expression: its source, its AST, and the names it reads."""

    source: str
    tree: ast.Expression
    names: frozenset[str]

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        """Value of the expression in `env` (variable/step name -> value). Raises EvalFailure."""
        return _eval(self.tree.body, env)


def compile_expression(source: str, known: set[str] | frozenset[str], where: str) -> Expression:
    """Parse and whitelist-check `source`; every name read must be in `known` or be a function.

    `where` names the place for error messages, e.g. "families/x.yaml: steps[2].expr".
    Raises TaskFamilyError on syntax errors, disallowed constructs and unknown names.
    """
    if not isinstance(source, str) or not source.strip():
        raise TaskFamilyError(f"{where}: expected a non-empty expression string, got {source!r}")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as err:
        raise TaskFamilyError(f"{where}: syntax error in {source!r}: {err.msg}") from None
    names: set[str] = set()
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        _check_node(node, source, where)
        if isinstance(node, ast.Name) and node.id in FUNCTIONS and id(node) not in called:
            raise TaskFamilyError(f"{where}: function {node.id!r} must be called, not used as a value, in {source!r}")
        if isinstance(node, ast.Name) and node.id not in FUNCTIONS:
            names.add(node.id)
    unknown = sorted(names - set(known))
    if unknown:
        raise TaskFamilyError(
            f"{where}: unknown name(s) {unknown} in {source!r}; expected one of the variables or earlier steps "
            f"{sorted(known)}"
        )
    return Expression(source.strip(), tree, frozenset(names))


def _check_node(node: ast.AST, source: str, where: str) -> None:
    if not isinstance(node, _ALLOWED_NODES):
        raise TaskFamilyError(
            f"{where}: {type(node).__name__} is not allowed in {source!r} (allowed: arithmetic, comparisons, "
            f"and/or/not, if-else, tuples, x[i], and the functions {sorted(FUNCTIONS)})"
        )
    if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, str)) or (
        isinstance(node, ast.Constant) and isinstance(node.value, bool)
    ):
        raise TaskFamilyError(f"{where}: constant {node.value!r} is not allowed in {source!r}")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            called = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise TaskFamilyError(
                f"{where}: call of {called!r} is not allowed in {source!r}; allowed functions: {sorted(FUNCTIONS)}"
            )
        if node.keywords:
            raise TaskFamilyError(f"{where}: keyword arguments are not allowed in {source!r}")
    if isinstance(node, ast.Subscript) and not (
        isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, int) and not isinstance(node.slice.value, bool)
    ):
        raise TaskFamilyError(f"{where}: only a constant integer index like x[0] is allowed in {source!r}")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and isinstance(node.right, ast.Constant):
        exponent = node.right.value
        if not isinstance(exponent, int) or abs(exponent) > MAX_EXPONENT:
            raise TaskFamilyError(f"{where}: exponent {exponent!r} in {source!r} must be an integer with |e| ≤ {MAX_EXPONENT}")


def _eval(node: ast.AST, env: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        value = node.value
        return Fraction(repr(value)) if isinstance(value, float) else Fraction(value) if isinstance(value, int) else value
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise EvalFailure(f"name {node.id!r} has no value")
        return env[node.id]
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_eval(e, env) for e in node.elts)
    if isinstance(node, ast.Subscript):
        seq = _eval(node.value, env)
        items = seq.items if isinstance(seq, Ordering) else seq
        if not isinstance(items, tuple) or not -len(items) <= node.slice.value < len(items):
            raise EvalFailure(f"index {node.slice.value} out of range for {seq!r}")
        return items[node.slice.value]
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, env)
        if isinstance(node.op, ast.Not):
            return not operand
        number = _number(operand, "unary minus")
        return -number if isinstance(node.op, ast.USub) else number
    if isinstance(node, ast.BinOp):
        return _binop(node, _eval(node.left, env), _eval(node.right, env))
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, comparator in zip(node.ops, node.comparators):
            right = _eval(comparator, env)
            try:
                if not _CMPOPS[type(op)](left, right):
                    return False
            except TypeError:
                raise EvalFailure(f"cannot compare {left!r} with {right!r}") from None
            left = right
        return True
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, env) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.IfExp):
        return _eval(node.body, env) if _eval(node.test, env) else _eval(node.orelse, env)
    if isinstance(node, ast.Call):
        args = [_eval(a, env) for a in node.args]
        try:
            return FUNCTIONS[node.func.id](*args)
        except TypeError as err:  # wrong arity
            raise EvalFailure(f"{node.func.id}: {err}") from None
    raise EvalFailure(f"unsupported node {type(node).__name__}")  # unreachable after compile_expression


def _binop(node: ast.BinOp, left: Any, right: Any) -> Any:
    op = type(node.op)
    if op is ast.Add and isinstance(left, str) and isinstance(right, str):
        return left + right
    a, b = _number(left, "arithmetic"), _number(right, "arithmetic")
    if op is ast.Div and b == 0:
        raise EvalFailure("division by zero")
    if op is ast.Pow:
        if b.denominator != 1 or abs(b) > MAX_EXPONENT:
            raise TaskFamilyError(f"exponent {b} must be an integer with |e| ≤ {MAX_EXPONENT}")
        if a == 0 and b < 0:
            raise EvalFailure("zero to a negative power")
    result = _BINOPS[op](a, b)
    if max(abs(result.numerator), result.denominator).bit_length() > MAX_DIGITS * 3.33:
        raise EvalFailure(f"intermediate value has more than {MAX_DIGITS} digits")
    return result
