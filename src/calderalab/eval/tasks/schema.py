"""What a task family is, as validated frozen data: variables with domains, templates, steps, mutations.

Built by `loader.py` from a YAML file; executed by `generate.py`. No torch, no I/O here.
A family's gold procedure is an ordered list of `Step`s (`name = expr`, plus a description
template); each `Mutation` is a complete alternative step list (a wrong plan), also executable, with
exactly as many steps as the gold plan (the loader refuses any other count).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal, Mapping

from calderalab.eval.tasks.interpreter import Expression, compile_expression
from calderalab.eval.tasks.values import ClockTime, render_value

VariableKind = Literal["int", "decimal", "choice", "names", "time"]
VARIABLE_KINDS = ("int", "decimal", "choice", "names", "time")
ANSWER_TYPES = ("number", "time", "ordering")
MUTATION_KINDS = (
    "wrong_order",  # steps applied in the wrong order
    "wrong_base",  # a percentage/rate applied to the wrong quantity
    "simple_vs_compound",  # simple instead of compound growth (or the reverse)
    "missing_step",  # a needed step left undone (replaced by one that skips it: the step count stays)
    "wrong_factor",  # a wrong conversion factor or rate
    "wrong_operation",  # add instead of subtract, multiply instead of divide, ...
    "reversed",  # ordering or direction reversed
    "extra_step",  # a step that does not belong (in place of a needed one)
    "partial",  # reports an intermediate quantity as the answer
)
MIN_STEPS, MAX_STEPS = 2, 6


@dataclass(frozen=True)
class VariableSpec:
    """A typed variable and its finite domain. `values` holds the domain for choice/names."""

    name: str
    kind: VariableKind
    low: Fraction | int = 0  # int/decimal: number; time: minutes since midnight
    high: Fraction | int = 0
    step: Fraction | int = 1
    values: tuple[Any, ...] = ()
    count: int = 1  # names: how many distinct names are drawn (the value is a tuple)

    def grid(self) -> tuple[Any, ...]:
        """All values of an int/decimal/time domain, in increasing order."""
        n = int((self.high - self.low) / self.step) + 1
        points = [self.low + i * self.step for i in range(n)]
        if self.kind == "time":
            return tuple(ClockTime(int(p)) for p in points)
        return tuple(Fraction(p) for p in points)

    def domain_size(self) -> int:
        if self.kind == "names":
            size = 1
            for i in range(self.count):
                size *= len(self.values) - i
            return size
        if self.kind == "choice":
            return len(self.values)
        return int((self.high - self.low) / self.step) + 1

    def sample(self, rng: random.Random) -> Any:
        """One value drawn uniformly from the domain with `rng`."""
        if self.kind == "names":
            return tuple(rng.sample(list(self.values), self.count))
        if self.kind == "choice":
            return self.values[rng.randrange(len(self.values))]
        index = rng.randrange(self.domain_size())
        point = self.low + index * self.step
        return ClockTime(int(point)) if self.kind == "time" else Fraction(point)

    def contains(self, value: Any) -> bool:
        if self.kind == "names":
            return (
                isinstance(value, tuple)
                and len(value) == self.count
                and len(set(value)) == self.count
                and all(v in self.values for v in value)
            )
        if self.kind == "choice":
            return value in self.values
        raw = value.minutes if self.kind == "time" and isinstance(value, ClockTime) else value
        if self.kind == "time" and not isinstance(value, ClockTime):
            return False
        if self.kind != "time" and not isinstance(value, Fraction):
            return False
        offset = (Fraction(raw) - self.low) / self.step
        return self.low <= raw <= self.high and offset.denominator == 1


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]+)\}")


@dataclass(frozen=True)
class Template:
    """Text with `{expr}` placeholders (`{{`/`}}` for literal braces) evaluated by the interpreter."""

    source: str
    parts: tuple[str | Expression, ...]

    @staticmethod
    def compile(source: Any, known: frozenset[str], where: str) -> "Template":
        from calderalab.errors import TaskFamilyError

        if not isinstance(source, str) or not source.strip():
            raise TaskFamilyError(f"{where}: expected a non-empty text template, got {source!r}")
        parts: list[str | Expression] = []
        pos = 0
        for match in [*_PLACEHOLDER.finditer(source), None]:
            literal = source[pos : match.start() if match else len(source)]
            if "{" in literal or "}" in literal:
                raise TaskFamilyError(f"{where}: unbalanced brace in {source!r} (write {{{{ or }}}} for a literal brace)")
            parts.append(literal)
            if match is None:
                break
            token = match.group(0)
            if token in ("{{", "}}"):
                parts.append(token[0])
            else:
                parts.append(compile_expression(match.group(1), known, f"{where} placeholder {token}"))
            pos = match.end()
        return Template(source, tuple(p for p in parts if p != ""))

    def render(self, env: Mapping[str, Any]) -> str:
        return "".join(p if isinstance(p, str) else render_value(p.evaluate(env)) for p in self.parts)


@dataclass(frozen=True)
class Step:
    """One named assignment of a procedure: `name = expr`, described to people by `text`."""

    name: str
    expr: Expression
    text: Template


@dataclass(frozen=True)
class Mutation:
    """A declared wrong plan: a complete, executable step list that differs from the gold one."""

    id: str
    kind: str
    description: str
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class AnswerSpec:
    """How the final value is typed, written and compared."""

    type: Literal["number", "time", "ordering"]
    decimals: int = 2
    tolerance: float = 0.0


@dataclass(frozen=True)
class Family:
    """A task family loaded from a YAML file (see `loader.load_family_file`)."""

    id: str
    description: str
    source: str  # the file it came from, for error messages and provenance
    variables: tuple[VariableSpec, ...]
    question: Template
    plan_question: Template
    conditions: tuple[Expression, ...]
    steps: tuple[Step, ...]
    answer: AnswerSpec
    mutations: tuple[Mutation, ...]
    canonical_variables: Mapping[str, Any] | None = None
    canonical_answer: str | None = None
    category: str = ""

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    def domain_size(self) -> int:
        size = 1
        for var in self.variables:
            size *= var.domain_size()
        return size
