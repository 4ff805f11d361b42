"""Difficulty ladders: task families whose step count k = 1 … 6 is a parameter. No torch, no I/O.

A ladder is a chain of rungs over one running value (a count, a clock time, an amount of money).
The k-step problem is the first k rungs, so each k adds exactly one step to the same story and
rates plotted against k are comparable. `Ladder.family(k)` expands the ladder into an ordinary
`Family` (id f"{ladder_id}_k{k}", k gold steps) that `generate.py` turns into instances; its wrong
plans all keep k steps: each replaces one rung by one of that rung's declared wrong variants, or
swaps two adjacent rungs (generation drops a swap whose answer equals the gold one). For k ≥ 2 an
instance shows two of them that touch different rungs and their combination (tasks/factorial.py), so
that no option shares more steps with the others than the gold plan does; k = 1 shows the one rung's variants.

File format (ladders/*.yaml; `ladder_loader.py` validates it and names file, field, expectation):

    id: storeroom                      # families storeroom_k1 … storeroom_k6
    description: ...
    intro: "A storeroom holds {n0} boxes."          # first sentence, over the start variables
    variables: {n0: {type: int, min: 10, max: 60}}  # start variables (same domains as families)
    start: "n0"                        # the running value before step 1
    question: "How many boxes are there now?"      # final question (optional if every step has one)
    answer: {type: number, decimals: 2}
    conditions: []                     # optional, over start variables
    steps:                             # 2-6 rungs; `prev` is the previous rung's value (or start)
      - name: delivered
        variables: {a: {type: int, min: 4, max: 30}}     # new variables of this rung
        says: "Then a truck delivers {a} more boxes."    # the sentence that states it
        expr: "prev + a"                                 # must read `prev`
        text: "Add the {a} delivered boxes to the count" # its plan step (variables only)
        conditions: ["delivered < 100"]                  # checked when the rung is included
        question: "..."                                  # optional: final question when k ends here
        wrong:                         # >= 2 variants that break this rung only; each text within
          - {id: sub, kind: wrong_operation, expr: "prev - a", text: "Subtract the {a} delivered boxes from the count"}
          - {id: mul, kind: wrong_operation, expr: "prev * a", text: "Multiply the count by the {a} delivered boxes"}
    canonical: {variables: {n0: 20, a: 5, ...}, answers: ["25", ...]}  # optional; one answer per k

Wrong texts must stay within PLAN_LENGTH_SLACK of the right text's length so that no plan can be
told apart by its length alone (DESIGN.md, Validity).
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from calderalab.eval.tasks.generate import generate_instances
from calderalab.eval.tasks.interpreter import Expression, compile_expression
from calderalab.eval.tasks.loader import DEFAULT_PLAN_QUESTION
from calderalab.eval.tasks.schema import MAX_STEPS, AnswerSpec, Family, Mutation, Step, Template, VariableSpec
from calderalab.eval.types import Instance

PREV = "prev"  # the reserved name of the previous rung's value in `expr` and `conditions`
MIN_K = 1  # ordinary families need schema.MIN_STEPS (2) steps; a ladder's k = 1 problem has one
MIN_RUNGS, MAX_RUNGS = 2, MAX_STEPS  # a ladder of one rung has no curve
MIN_WRONG_PER_RUNG = 2  # so that k = 1 still has two wrong plans (no swap exists there)
PLAN_LENGTH_SLACK = 0.25  # a wrong text's length may differ from the right one's by this fraction
PLACEHOLDER_WIDTH = 2  # ... where a placeholder counts as a 2-character number, not as its source


@dataclass(frozen=True)
class WrongVariant:
    """A way to get one rung wrong: another `expr` (may read `prev`) and its plan text."""

    id: str
    kind: str
    expr: Expression
    text: Template


@dataclass(frozen=True)
class Rung:
    """One step of the ladder: its new variables, its sentence, its gold operation and its wrong ones."""

    name: str
    variables: tuple[VariableSpec, ...]
    says: Template
    expr: Expression
    text: Template
    wrong: tuple[WrongVariant, ...]
    conditions: tuple[Expression, ...] = ()
    question: Template | None = None


@dataclass(frozen=True)
class Ladder:
    """A validated ladder file (see the module docstring); `family(k)` gives its k-step family."""

    id: str
    description: str
    source: str
    intro: Template
    variables: tuple[VariableSpec, ...]
    start: Expression
    question: Template | None  # None when every rung has its own final question
    answer: AnswerSpec
    rungs: tuple[Rung, ...]
    conditions: tuple[Expression, ...] = ()
    canonical_variables: Mapping[str, Any] | None = None
    canonical_answers: tuple[str, ...] | None = None
    category: str = ""

    @property
    def max_steps(self) -> int:
        return len(self.rungs)

    def family(self, k: int) -> Family:
        """The problem made of the first k rungs, as an ordinary Family with k steps."""
        if isinstance(k, bool) or not isinstance(k, int) or not MIN_K <= k <= self.max_steps:
            raise ValueError(f"ladder {self.id!r} has steps k = {MIN_K} … {self.max_steps}, got k = {k!r}")
        return _expand(self, k)

    def families(self) -> tuple[Family, ...]:
        return tuple(self.family(k) for k in range(MIN_K, self.max_steps + 1))


@dataclass(frozen=True)
class _Op:
    """A rung operation in a plan before `prev` is bound to the value it reads."""

    name: str
    expr: Expression
    text: Template


class _BindPrev(ast.NodeTransformer):
    def __init__(self, value: ast.expr):
        self.value = value

    def visit_Name(self, node: ast.Name) -> ast.expr:
        return copy.deepcopy(self.value) if node.id == PREV else node


def bind_prev(expr: Expression, value: ast.expr, known: frozenset[str], where: str) -> Expression:
    """`expr` with every `prev` replaced by the expression `value` (the start, or a rung's name)."""
    tree = _BindPrev(value).visit(copy.deepcopy(expr.tree))
    return compile_expression(ast.unparse(tree), known, where)


def _chain(ladder: Ladder, ops: list[_Op], known: frozenset[str], where: str) -> tuple[Step, ...]:
    """Steps that apply `ops` in order, each reading the value the one before it computed."""
    value: ast.expr = ladder.start.tree.body
    steps = []
    for op in ops:
        steps.append(Step(op.name, bind_prev(op.expr, value, known, where), op.text))
        value = ast.Name(op.name, ast.Load())
    return tuple(steps)


def _mutations(ladder: Ladder, k: int, known: frozenset[str]) -> tuple[Mutation, ...]:
    """Each wrong variant of each included rung in place of the gold one, then each adjacent swap."""
    gold = [_Op(r.name, r.expr, r.text) for r in ladder.rungs[:k]]
    where = f"{ladder.source}: ladder {ladder.id!r} at k={k}"
    mutations = []
    for i, rung in enumerate(ladder.rungs[:k]):
        for wrong in rung.wrong:
            ops = gold[:i] + [_Op(rung.name, wrong.expr, wrong.text)] + gold[i + 1 :]
            desc = f"step {i + 1} ({rung.name}) done wrong: {wrong.id}"
            mutations.append(Mutation(f"{rung.name}_{wrong.id}", wrong.kind, desc, _chain(ladder, ops, known, where)))
    for i in range(k - 1):
        ops = gold[:i] + [gold[i + 1], gold[i]] + gold[i + 2 :]
        desc = f"steps {i + 1} and {i + 2} in the wrong order"
        mutations.append(Mutation(f"swap_{gold[i].name}_{gold[i + 1].name}", "wrong_order", desc, _chain(ladder, ops, known, where)))
    return tuple(mutations)


def _conditions(ladder: Ladder, k: int, known: frozenset[str]) -> tuple[Expression, ...]:
    """The ladder's conditions plus those of the first k rungs, with `prev` bound to the gold chain."""
    bound = list(ladder.conditions)
    value: ast.expr = ladder.start.tree.body
    for i, rung in enumerate(ladder.rungs[:k]):
        where = f"{ladder.source}: field 'steps[{i}].conditions'"
        bound += [bind_prev(c, value, known, where) for c in rung.conditions]
        value = ast.Name(rung.name, ast.Load())
    return tuple(bound)


def _expand(ladder: Ladder, k: int) -> Family:
    rungs = ladder.rungs[:k]
    variables = ladder.variables + tuple(v for r in rungs for v in r.variables)
    var_names = frozenset(v.name for v in variables)
    known = var_names | {r.name for r in rungs}
    final = rungs[-1].question or ladder.question
    assert final is not None  # the loader requires a ladder question or one on every rung
    sentences = [ladder.intro.source, *(r.says.source for r in rungs), final.source]
    question = Template.compile(" ".join(sentences), var_names, f"{ladder.source}: question at k={k}")
    plan_question = Template.compile(DEFAULT_PLAN_QUESTION.replace("{question}", question.source), var_names, ladder.source)
    canonical = None
    if ladder.canonical_variables is not None:
        canonical = {name: ladder.canonical_variables[name] for name in sorted(var_names)}
    return Family(
        id=f"{ladder.id}_k{k}",
        description=f"{ladder.description} ({k} step{'s' if k > 1 else ''})".strip(),
        source=ladder.source,
        variables=variables,
        question=question,
        plan_question=plan_question,
        conditions=_conditions(ladder, k, known),
        steps=_chain(ladder, [_Op(r.name, r.expr, r.text) for r in rungs], known, ladder.source),
        answer=ladder.answer,
        mutations=_mutations(ladder, k, known),
        canonical_variables=canonical,
        canonical_answer=None if ladder.canonical_answers is None else ladder.canonical_answers[k - 1],
        category=ladder.category,
    )


def ladder_instances(
    ladders: Iterable[Ladder], n_per_step: int, seed: int = 0, steps: Iterable[int] = range(1, 7)
) -> list[Instance]:
    """`n_per_step` instances of every ladder at every k in `steps` (ladder id order, then k).

    Instance.family is f"{ladder.id}_k{k}" and Instance.n_steps is k; deterministic in `seed`.
    A k beyond a ladder's last rung is an error, not a silent gap in the curve.
    """
    ks = sorted(set(steps))
    ladders = sorted(ladders, key=lambda lad: lad.id)
    ids = [lad.id for lad in ladders]
    if len(set(ids)) != len(ids):
        raise ValueError(f"ladder ids must be unique, got {ids}")
    families = []
    for ladder in ladders:
        too_far = [k for k in ks if not MIN_K <= k <= ladder.max_steps]
        if too_far:
            raise ValueError(
                f"ladder {ladder.id!r} ({ladder.source}) has steps k = {MIN_K} … {ladder.max_steps}, not {too_far}; "
                f"pass steps=range(1, {ladder.max_steps + 1}) or give the ladder more steps"
            )
        families += [ladder.family(k) for k in ks]
    # One family per call: generate_instances orders by id, and (ladder, k) order is what callers plot.
    return [inst for family in families for inst in generate_instances([family], n_per_step, seed)]
