"""Reading ladder YAML files (format: ladder.py) into validated `Ladder`s, and finding the built-in ones.

Errors are TaskFamilyError naming the file, the field and what was expected, like loader.py,
whose field parsers (variables, answer, canonical values) this module reuses. Loading also
expands the ladder at every k and checks each k-step family's canonical answer, so a broken
rung surfaces at load time, not mid-evaluation.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from calderalab.errors import TaskFamilyError
from calderalab.eval.tasks.generate import check_family
from calderalab.eval.tasks.interpreter import Expression, compile_expression
from calderalab.eval.tasks.ladder import (
    MAX_RUNGS,
    MIN_RUNGS,
    MIN_WRONG_PER_RUNG,
    PLACEHOLDER_WIDTH,
    PLAN_LENGTH_SLACK,
    PREV,
    Ladder,
    Rung,
    WrongVariant,
)
from calderalab.eval.tasks.loader import (_ID_CHARS, _answer, _Ctx, _identifier, _variable, canonical_values,
                                          extra_task_files, load_unique, read_yaml)
from calderalab.eval.tasks.schema import MUTATION_KINDS, Template, VariableSpec

log = logging.getLogger(__name__)


def _variables(ctx: _Ctx, field: str, raw: Any, taken: set[str]) -> tuple[VariableSpec, ...]:
    """Variables declared at `field`; names must be new (not `prev`, not used before). Adds them to `taken`."""
    if not isinstance(raw, dict):
        raise ctx.error(field, "a mapping name -> {type, domain}", raw)
    specs = []
    for name, spec in raw.items():
        _identifier(ctx, f"{field}.{name}", name)
        if name == PREV or name in taken:
            raise ctx.error(f"{field}.{name}", f"a new name (not '{PREV}' and not already a variable or step)", name)
        # loader's messages say "variables.<name>": prefix the rung so the field is findable.
        try:
            specs.append(_variable(ctx, name, spec))
        except TaskFamilyError as err:
            raise TaskFamilyError(str(err).replace("field 'variables.", f"field '{field}.")) from None
        taken.add(name)
    return tuple(specs)


def _expressions(ctx: _Ctx, field: str, raw: Any, known: set[str]) -> tuple[Expression, ...]:
    if not isinstance(raw, list):
        raise ctx.error(field, "a list of boolean expressions", raw)
    return tuple(compile_expression(c, frozenset(known), f"{ctx.path}: field '{field}[{i}]'") for i, c in enumerate(raw))


def shown_length(text: Template) -> int:
    """Characters a plan text shows, counting each placeholder as a short number (not its source)."""
    return sum(len(p) if isinstance(p, str) else PLACEHOLDER_WIDTH for p in text.parts)


def _check_length(ctx: _Ctx, field: str, right: Template, wrong: Template) -> None:
    """A wrong text must not give itself away by being much longer or shorter than the right one."""
    if abs(shown_length(wrong) - shown_length(right)) > PLAN_LENGTH_SLACK * shown_length(right):
        raise ctx.error(
            field,
            f"a plan text within {PLAN_LENGTH_SLACK:.0%} of the length of the right text {right.source!r} "
            f"({shown_length(right)} characters, a placeholder counting {PLACEHOLDER_WIDTH}) so that length "
            "does not give the answer away",
            wrong.source,
        )


def _wrong(ctx: _Ctx, field: str, raw: Any, right: Template, known: set[str], var_names: set[str]) -> tuple[WrongVariant, ...]:
    if not isinstance(raw, list) or len(raw) < MIN_WRONG_PER_RUNG:
        raise ctx.error(field, f"a list of at least {MIN_WRONG_PER_RUNG} wrong variants {{id, kind, expr, text}}", raw)
    variants = []
    for j, item in enumerate(raw):
        where = f"{field}[{j}]"
        if not isinstance(item, dict):
            raise ctx.error(where, "a mapping {id, kind, expr, text}", item)
        variant_id = _identifier(ctx, where + ".id", item.get("id", f"wrong{j + 1}"))
        if item.get("kind") not in MUTATION_KINDS:
            raise ctx.error(where + ".kind", f"one of {list(MUTATION_KINDS)}", item.get("kind"))
        expr = compile_expression(item.get("expr"), frozenset(known), f"{ctx.path}: field '{where}.expr'")
        text = Template.compile(item.get("text"), frozenset(var_names), f"{ctx.path}: field '{where}.text'")
        _check_length(ctx, where + ".text", right, text)
        variants.append(WrongVariant(variant_id, item["kind"], expr, text))
    if len({v.id for v in variants}) != len(variants):
        raise ctx.error(field, "unique wrong-variant ids", [v.id for v in variants])
    return tuple(variants)


def _rung(ctx: _Ctx, i: int, raw: Any, taken: set[str], rung_names: set[str]) -> Rung:
    """One rung; `taken` (variable names) and `rung_names` grow with what it declares."""
    field = f"steps[{i}]"
    if not isinstance(raw, dict):
        raise ctx.error(field, "a mapping {name, variables, says, expr, text, wrong}", raw)
    name = _identifier(ctx, field + ".name", raw.get("name"))
    if name == PREV or name in taken or name in rung_names:
        raise ctx.error(field + ".name", f"a new name (not '{PREV}', a variable or an earlier step)", name)
    variables = _variables(ctx, field + ".variables", raw.get("variables", {}), taken)
    var_names = set(taken)
    known = var_names | rung_names | {PREV}
    says = Template.compile(raw.get("says"), frozenset(var_names), f"{ctx.path}: field '{field}.says'")
    expr = compile_expression(raw.get("expr"), frozenset(known), f"{ctx.path}: field '{field}.expr'")
    if PREV not in expr.names:
        raise ctx.error(field + ".expr", f"an expression that reads '{PREV}' (the value the step before computed)", expr.source)
    text = Template.compile(raw.get("text"), frozenset(var_names), f"{ctx.path}: field '{field}.text'")
    wrong = _wrong(ctx, field + ".wrong", raw.get("wrong"), text, known, var_names)
    rung_names.add(name)
    conditions = _expressions(ctx, field + ".conditions", raw.get("conditions", []), known | {name})
    question = None
    if raw.get("question") is not None:
        question = Template.compile(raw["question"], frozenset(var_names), f"{ctx.path}: field '{field}.question'")
    return Rung(name, variables, says, expr, text, wrong, conditions, question)


def _canonical(ctx: _Ctx, raw: Any, variables: list[VariableSpec], n_rungs: int) -> tuple[dict, tuple[str, ...]]:
    values = canonical_values(ctx, raw, variables, "answers: [one per step count]")
    answers = raw.get("answers")
    if not isinstance(answers, list) or len(answers) != n_rungs:
        raise ctx.error("canonical.answers", f"a list of {n_rungs} answers, the k-step answer for k = 1 … {n_rungs}", answers)
    return values, tuple(str(a) for a in answers)


def parse_ladder(data: Any, path: str) -> Ladder:
    """Validate one ladder's parsed YAML (a dict) and build the Ladder. Raises TaskFamilyError."""
    ctx = _Ctx(path)
    if not isinstance(data, dict):
        raise TaskFamilyError(f"{path}: expected a YAML mapping at the top level, got {type(data).__name__}")
    ladder_id = ctx.require(data, "id", str, "a lower-case id like 'storeroom'")
    if not ladder_id or not set(ladder_id) <= _ID_CHARS:
        raise ctx.error("id", "lower-case letters, digits and '_'", ladder_id)
    taken: set[str] = set()
    variables = _variables(ctx, "variables", ctx.require(data, "variables", dict, "a mapping name -> {type, domain}"), taken)
    start_names = frozenset(taken)
    intro = Template.compile(data.get("intro"), start_names, f"{path}: field 'intro'")
    start = compile_expression(data.get("start"), start_names, f"{path}: field 'start'")
    question = None
    if data.get("question") is not None:
        question = Template.compile(data["question"], start_names, f"{path}: field 'question'")
    answer = _answer(ctx, data.get("answer"))
    conditions = _expressions(ctx, "conditions", data.get("conditions", []), set(start_names))
    raw_rungs = data.get("steps")
    if not isinstance(raw_rungs, list) or not MIN_RUNGS <= len(raw_rungs) <= MAX_RUNGS:
        got = len(raw_rungs) if isinstance(raw_rungs, list) else raw_rungs
        raise ctx.error("steps", f"a list of {MIN_RUNGS} to {MAX_RUNGS} steps (the k-step problem uses the first k)", got)
    rung_names: set[str] = set()
    rungs = tuple(_rung(ctx, i, r, taken, rung_names) for i, r in enumerate(raw_rungs))
    unasked = [f"steps[{i}]" for i, r in enumerate(rungs) if r.question is None]
    if question is None and unasked:
        raise ctx.error("question", f"a final question, or a 'question' on every step (missing on {unasked})")
    canonical_vars, canonical_answers = None, None
    if "canonical" in data:
        all_vars = [*variables, *(v for r in rungs for v in r.variables)]
        canonical_vars, canonical_answers = _canonical(ctx, data["canonical"], all_vars, len(rungs))
    return Ladder(
        id=ladder_id,
        description=str(data.get("description", "")).strip(),
        source=path,
        intro=intro,
        variables=variables,
        start=start,
        question=question,
        answer=answer,
        rungs=rungs,
        conditions=conditions,
        canonical_variables=canonical_vars,
        canonical_answers=canonical_answers,
        category=str(data.get("category", "")),
    )


def load_ladder_file(path: str | Path) -> Ladder:
    """Read and validate one ladder file; every k-step family must run and match its canonical answer."""
    path = Path(path)
    ladder = parse_ladder(read_yaml(path), str(path))
    for family in ladder.families():
        try:
            check_family(family)
        except TaskFamilyError as err:
            raise TaskFamilyError(f"{err} (ladder {ladder.id!r}, k = {family.n_steps})") from None
    return ladder


def builtin_ladder_paths() -> list[Path]:
    root = resources.files("calderalab.eval.tasks") / "ladders"
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith((".yaml", ".yml")))


def load_ladders(extra_dirs: Iterable[str | Path] = ()) -> list[Ladder]:
    """The built-in ladders plus every ladder file in `extra_dirs`, sorted by id; ids must be unique."""
    return load_unique(builtin_ladder_paths() + extra_task_files(extra_dirs, ladders=True), load_ladder_file, "ladder")
