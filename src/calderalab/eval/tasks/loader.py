"""Reading task-family YAML files into validated `Family` objects, and finding the built-in ones.

Every problem raises TaskFamilyError naming the file, the field and what was expected, so a
user adding a family with `--tasks-dir` can fix it without reading this code. Besides the
shape of the file, loading runs the family once on its canonical assignment (or its first
grid point) so that type errors in steps surface at load time, not mid-evaluation.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from calderalab.errors import TaskFamilyError
from calderalab.eval.tasks.generate import check_family
from calderalab.eval.tasks.interpreter import compile_expression
from calderalab.eval.tasks.schema import (
    ANSWER_TYPES,
    MAX_STEPS,
    MIN_STEPS,
    MUTATION_KINDS,
    VARIABLE_KINDS,
    AnswerSpec,
    Family,
    Mutation,
    Step,
    Template,
    VariableSpec,
)
from calderalab.eval.tasks.values import ClockTime, parse_clock, to_fraction

log = logging.getLogger(__name__)

DEFAULT_PLAN_QUESTION = "{question}\nWhich plan correctly solves the problem?"
_ID_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_")


class _Ctx:
    """The file being read, for error messages."""

    def __init__(self, path: str):
        self.path = path

    def error(self, field: str, expected: str, got: Any = ...) -> TaskFamilyError:
        tail = "" if got is ... else f", got {got!r}"
        return TaskFamilyError(f"{self.path}: field '{field}': expected {expected}{tail}")

    def require(self, data: dict, key: str, kind: type | tuple[type, ...], expected: str, prefix: str = "") -> Any:
        field = f"{prefix}{key}"
        if key not in data:
            raise self.error(field, f"{expected} (the field is missing)")
        value = data[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise self.error(field, expected, value)
        return value


def _identifier(ctx: _Ctx, field: str, value: Any) -> str:
    if not isinstance(value, str) or not value.isidentifier() or value.startswith("_"):
        raise ctx.error(field, "a name made of letters, digits and '_' (not starting with '_' or a digit)", value)
    return value


def _number(ctx: _Ctx, field: str, value: Any) -> Fraction:
    try:
        return to_fraction(value)
    except (ValueError, ZeroDivisionError):
        raise ctx.error(field, "a number (int or decimal like 0.25)", value) from None


def _variable(ctx: _Ctx, name: str, spec: Any) -> VariableSpec:
    prefix = f"variables.{name}."
    if not isinstance(spec, dict):
        raise ctx.error(f"variables.{name}", "a mapping with 'type' and its domain", spec)
    kind = ctx.require(spec, "type", str, f"one of {list(VARIABLE_KINDS)}", prefix)
    if kind not in VARIABLE_KINDS:
        raise ctx.error(prefix + "type", f"one of {list(VARIABLE_KINDS)}", kind)
    if kind in ("choice", "names"):
        values = ctx.require(spec, "values", list, "a non-empty list of values", prefix)
        if not values or len(set(map(str, values))) != len(values):
            raise ctx.error(prefix + "values", "a non-empty list without duplicates", values)
        if kind == "names":
            if not all(isinstance(v, str) and v.strip() for v in values):
                raise ctx.error(prefix + "values", "a list of non-empty name strings", values)
            count = spec.get("count", 1)
            if not isinstance(count, int) or not 1 <= count <= len(values):
                raise ctx.error(prefix + "count", f"an integer between 1 and {len(values)} (the number of names)", count)
            return VariableSpec(name, "names", values=tuple(values), count=count)
        parsed = tuple(v if isinstance(v, str) else _number(ctx, prefix + "values", v) for v in values)
        return VariableSpec(name, "choice", values=parsed)
    if kind == "time":
        try:
            low, high = parse_clock(spec.get("min", "")).minutes, parse_clock(spec.get("max", "")).minutes
        except ValueError as err:
            raise ctx.error(prefix + "min/max", "clock times like '8:00 AM' or '13:30'", str(err)) from None
        step = spec.get("step", 5)
        if not isinstance(step, int) or step <= 0:
            raise ctx.error(prefix + "step", "a positive whole number of minutes", step)
    else:
        low = _number(ctx, prefix + "min", spec.get("min"))
        high = _number(ctx, prefix + "max", spec.get("max"))
        step = _number(ctx, prefix + "step", spec.get("step", 1))
        if kind == "int" and not all(x.denominator == 1 for x in (low, high, step)):
            raise ctx.error(prefix + "min/max/step", "whole numbers for an int variable", (spec.get("min"), spec.get("max"), spec.get("step")))
    if step <= 0 or high < low or (Fraction(high) - low) / step != int((Fraction(high) - low) / step):
        raise ctx.error(prefix + "min/max/step", "min ≤ max, step > 0, and max - min a multiple of step", (spec.get("min"), spec.get("max"), step))
    return VariableSpec(name, kind, low=low, high=high, step=step)


def _steps(ctx: _Ctx, field: str, raw: Any, var_names: frozenset[str]) -> tuple[Step, ...]:
    if not isinstance(raw, list) or not raw:
        raise ctx.error(field, "a non-empty list of steps {name, expr, text}", raw)
    known = set(var_names)
    steps: list[Step] = []
    for i, item in enumerate(raw):
        where = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise ctx.error(where, "a mapping {name, expr, text}", item)
        name = _identifier(ctx, where + ".name", item.get("name"))
        if name in var_names:
            raise ctx.error(where + ".name", f"a new name (it shadows the variable {name!r})", name)
        expr = compile_expression(item.get("expr"), frozenset(known), f"{ctx.path}: field '{where}.expr'")
        # Plan texts may only show variables: showing step results would give the answer away.
        text = Template.compile(item.get("text"), var_names, f"{ctx.path}: field '{where}.text'")
        steps.append(Step(name, expr, text))
        known.add(name)
    return tuple(steps)


LENGTH_FIX = "replace the step with a wrong one instead of removing it: a shorter plan gives itself away by its length"


def _check_plan_length(ctx: _Ctx, field: str, mut_id: str, raw: dict, n_steps: int | None, n_gold: int) -> None:
    """A wrong plan must have exactly the gold plan's step count, or "pick the longest plan" beats chance.

    Called with n_steps=None before the plan is built (to refuse `remove:`), then with its step count."""
    if "remove" in raw:
        raise TaskFamilyError(
            f"{ctx.path}: field '{field}.remove': mutation {mut_id!r} removes gold steps {raw['remove']!r}; {LENGTH_FIX}"
        )
    if n_steps is not None and n_steps != n_gold:
        raise TaskFamilyError(
            f"{ctx.path}: field '{field}.steps': mutation {mut_id!r} has {n_steps} steps but the gold plan has "
            f"{n_gold}; every wrong plan needs exactly {n_gold}: {LENGTH_FIX}"
        )


def _edited_gold(ctx: _Ctx, field: str, raw: dict, gold: tuple[Step, ...], var_names: frozenset[str]) -> tuple[Step, ...]:
    """The gold steps with `replace:` overrides applied and an optional `swap:` of two steps."""
    by_name = {s.name: {"name": s.name, "expr": s.expr.source, "text": s.text.source} for s in gold}
    order = [s.name for s in gold]
    for name, override in (raw.get("replace") or {}).items():
        if name not in by_name or not isinstance(override, dict):
            raise ctx.error(f"{field}.replace.{name}", f"a gold step name {order} mapped to {{expr, text}}", override)
        by_name[name] = {**by_name[name], **override}
    swap = raw.get("swap")
    if swap is not None:
        if not isinstance(swap, list) or len(swap) != 2 or not all(s in order for s in swap):
            raise ctx.error(f"{field}.swap", f"two step names from {order}", swap)
        a, b = order.index(swap[0]), order.index(swap[1])
        order[a], order[b] = order[b], order[a]
    if not any(k in raw for k in ("replace", "swap")):
        raise ctx.error(field, "one of 'steps', 'replace', 'swap'")
    return _steps(ctx, field, [by_name[n] for n in order], var_names)


def _mutation(ctx: _Ctx, i: int, raw: Any, gold: tuple[Step, ...], var_names: frozenset[str]) -> Mutation:
    field = f"mutations[{i}]"
    if not isinstance(raw, dict):
        raise ctx.error(field, "a mapping {id, kind, description, steps | replace/swap}", raw)
    mut_id = _identifier(ctx, field + ".id", raw.get("id"))
    kind = raw.get("kind")
    if kind not in MUTATION_KINDS:
        raise ctx.error(field + ".kind", f"one of {list(MUTATION_KINDS)}", kind)
    _check_plan_length(ctx, field, mut_id, raw, None, len(gold))
    if "steps" in raw:
        steps = _steps(ctx, field + ".steps", raw["steps"], var_names)
    else:
        steps = _edited_gold(ctx, field, raw, gold, var_names)
    _check_plan_length(ctx, field, mut_id, raw, len(steps), len(gold))
    return Mutation(mut_id, kind, str(raw.get("description", kind)), steps)


def _answer(ctx: _Ctx, raw: Any) -> AnswerSpec:
    if not isinstance(raw, dict) or raw.get("type") not in ANSWER_TYPES:
        got = raw.get("type") if isinstance(raw, dict) else raw
        raise ctx.error("answer.type", f"one of {list(ANSWER_TYPES)}", got)
    decimals = raw.get("decimals", 2)
    tolerance = raw.get("tolerance", 0)
    if not isinstance(decimals, int) or not 0 <= decimals <= 6:
        raise ctx.error("answer.decimals", "an integer from 0 to 6", decimals)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise ctx.error("answer.tolerance", "a number ≥ 0", tolerance)
    return AnswerSpec(raw["type"], decimals, float(tolerance))


def _canonical_value(ctx: _Ctx, var: VariableSpec, value: Any) -> Any:
    field = f"canonical.variables.{var.name}"
    try:
        if var.kind == "names":
            parsed: Any = tuple(value) if isinstance(value, list) else value
        elif var.kind == "time":
            parsed = parse_clock(value)
        elif var.kind == "choice" and isinstance(value, str):
            parsed = value
        else:
            parsed = to_fraction(value)
    except (ValueError, TypeError):
        raise ctx.error(field, f"a {var.kind} value", value) from None
    if not var.contains(parsed):
        raise ctx.error(field, f"a value inside the declared {var.kind} domain of '{var.name}'", value)
    return parsed


def canonical_values(ctx: _Ctx, raw: Any, variables: Iterable[VariableSpec], rest: str) -> dict[str, Any]:
    """The parsed `canonical.variables` of a family or ladder: exactly `variables`, each in its
    domain. `rest` names the other canonical field(s) in the error message."""
    if not isinstance(raw, dict) or not isinstance(raw.get("variables"), dict):
        raise ctx.error("canonical", f"a mapping {{variables: {{...}}, {rest}}}", raw)
    variables = list(variables)
    names = {v.name for v in variables}
    missing, extra = sorted(names - set(raw["variables"])), sorted(set(raw["variables"]) - names)
    if missing or extra:
        raise ctx.error("canonical.variables", f"exactly the variables {sorted(names)}", f"missing {missing}, unknown {extra}")
    return {v.name: _canonical_value(ctx, v, raw["variables"][v.name]) for v in variables}


def parse_family(data: Any, path: str) -> Family:
    """Validate one family's parsed YAML (a dict) and build the Family. Raises TaskFamilyError."""
    ctx = _Ctx(path)
    if not isinstance(data, dict):
        raise TaskFamilyError(f"{path}: expected a YAML mapping at the top level, got {type(data).__name__}")
    fam_id = ctx.require(data, "id", str, "a lower-case id like 'discount_coupon'")
    if not fam_id or not set(fam_id) <= _ID_CHARS:
        raise ctx.error("id", "lower-case letters, digits and '_'", fam_id)
    raw_vars = ctx.require(data, "variables", dict, "a mapping name -> {type, domain}")
    variables = tuple(_variable(ctx, _identifier(ctx, f"variables.{n}", n), s) for n, s in raw_vars.items())
    var_names = frozenset(v.name for v in variables)
    steps = _steps(ctx, "steps", data.get("steps"), var_names)
    if not MIN_STEPS <= len(steps) <= MAX_STEPS:
        raise ctx.error("steps", f"between {MIN_STEPS} and {MAX_STEPS} steps", len(steps))
    all_names = var_names | {s.name for s in steps}
    question = Template.compile(data.get("question"), var_names, f"{path}: field 'question'")
    plan_q = Template.compile(
        data.get("plan_question", DEFAULT_PLAN_QUESTION).replace("{question}", question.source),
        var_names,
        f"{path}: field 'plan_question'",
    )
    raw_conditions = data.get("conditions", [])
    if not isinstance(raw_conditions, list):
        raise ctx.error("conditions", "a list of boolean expressions", raw_conditions)
    conditions = tuple(
        compile_expression(c, all_names, f"{path}: field 'conditions[{i}]'") for i, c in enumerate(raw_conditions)
    )
    answer = _answer(ctx, data.get("answer"))
    raw_mutations = data.get("mutations")
    if not isinstance(raw_mutations, list) or len(raw_mutations) < 2:
        raise ctx.error("mutations", "a list of at least 2 wrong plans (3-4 plan options per instance)", raw_mutations)
    mutations = tuple(_mutation(ctx, i, m, steps, var_names) for i, m in enumerate(raw_mutations))
    if len({m.id for m in mutations}) != len(mutations):
        raise ctx.error("mutations", "unique mutation ids", [m.id for m in mutations])
    canonical_vars, canonical_answer = None, None
    if "canonical" in data:
        canonical_vars = canonical_values(ctx, data["canonical"], variables, "answer: '...'")
        answer_raw = data["canonical"].get("answer")
        canonical_answer = None if answer_raw is None else str(answer_raw)
    return Family(
        id=fam_id,
        description=str(data.get("description", "")).strip(),
        source=path,
        variables=variables,
        question=question,
        plan_question=plan_q,
        conditions=conditions,
        steps=steps,
        answer=answer,
        mutations=mutations,
        canonical_variables=canonical_vars,
        canonical_answer=canonical_answer,
        category=str(data.get("category", "")),
    )


def read_yaml(path: Path) -> Any:
    """The parsed YAML of a task file; TaskFamilyError naming the file when it cannot be read or parsed."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise TaskFamilyError(f"{path}: not valid YAML: {err}") from None
    except OSError as err:
        raise TaskFamilyError(f"{path}: cannot read the file: {err}") from None


def load_family_file(path: str | Path) -> Family:
    """Read and validate one family file; its canonical instance (if any) must give its stated answer."""
    path = Path(path)
    family = parse_family(read_yaml(path), str(path))
    check_family(family)
    return family


def builtin_family_paths() -> list[Path]:
    root = resources.files("calderalab.eval.tasks") / "families"
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith((".yaml", ".yml")))


def is_ladder_data(data: Any) -> bool:
    """A ladder file (eval/tasks/ladders/) has a top-level 'start' (the running value); a family has none."""
    return isinstance(data, dict) and "start" in data


def extra_task_files(extra_dirs: Iterable[str | Path], ladders: bool) -> list[Path]:
    """The *.yaml/*.yml files of `extra_dirs` that hold ladders (ladders=True) or ordinary families:
    one --tasks-dir may hold both kinds, and each loader takes its own."""
    paths: list[Path] = []
    for directory in extra_dirs:
        directory = Path(directory)
        if not directory.is_dir():
            raise TaskFamilyError(f"{directory}: tasks directory not found (pass a folder of family or ladder YAML files)")
        files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml"))
        paths += [p for p in files if is_ladder_data(read_yaml(p)) == ladders]
    return paths


def load_unique(paths: Iterable[Path], load: Callable[[Path], Any], noun: str) -> list[Any]:
    """Load every file with `load`; ids must be unique (TaskFamilyError naming both files); sorted by id."""
    loaded: dict[str, Any] = {}
    for path in paths:
        item = load(path)
        if item.id in loaded:
            raise TaskFamilyError(
                f"{path}: field 'id': duplicate {noun} id {item.id!r} (already defined in {loaded[item.id].source}); "
                "rename one of them"
            )
        loaded[item.id] = item
    log.debug("loaded %d %ss", len(loaded), noun)
    return [loaded[k] for k in sorted(loaded)]


def load_families(extra_dirs: Iterable[str | Path] = ()) -> list["Family"]:
    """The built-in families plus every family file in `extra_dirs`, sorted by id; ids must be unique."""
    return load_unique(builtin_family_paths() + extra_task_files(extra_dirs, ladders=False), load_family_file, "family")
