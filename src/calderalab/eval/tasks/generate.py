"""Instances from families: solve with the gold plan, run the wrong plans, render both probes. No torch.

The understanding probe shows the gold plan and wrong plans chosen so that neither the gold plan's
length (options.py) nor the steps it shares with the other options (factorial.py) gives it away:
where two wrong plans change disjoint steps, the options are the 2×2 factorial {gold, A, B, A+B}.

Determinism: every random choice comes from a `random.Random` seeded by a SHA-256 of
(seed, family id, purpose, counter), never from `hash()` or dict order, so the same seed gives
identical instances in any process. Sampling is rejection sampling over the family's conditions
with a bounded number of tries per instance.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterable, Mapping, Sequence

from calderalab.errors import TaskFamilyError
from calderalab.eval.tasks.factorial import combined, least_central_subsets
from calderalab.eval.tasks.interpreter import EvalFailure
from calderalab.eval.tasks.options import balanced_subset, blocked_rank, nearest_rank_choice, unbiased_size
from calderalab.eval.tasks.schema import Family, Step
from calderalab.eval.types import Instance
from calderalab.eval.tasks.values import ClockTime, Ordering, format_number, to_plain

log = logging.getLogger(__name__)

MAX_TRIES = 2000  # consecutive rejected samples before giving up on a new distinct instance
MAX_PLAN_OPTIONS = 4  # the correct plan + up to 3 wrong ones
MAX_ANSWER_OPTIONS = 4  # the gold answer + up to 3 wrong plans' answers
MIN_WRONG_PLANS = 2


def derive_rng(seed: int, *parts: object) -> random.Random:
    """A generator that depends only on (seed, parts), stable across processes and Python runs."""
    digest = hashlib.sha256("|".join(map(str, (seed, *parts))).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def run_plan(steps: Sequence[Step], variables: Mapping[str, Any]) -> dict[str, Any]:
    """Execute steps in order; returns the environment (variables + every step's value). Raises EvalFailure."""
    env = dict(variables)
    for step in steps:
        env[step.name] = step.expr.evaluate(env)
    return env


def format_answer(family: Family, value: Any, plan: str = "gold plan") -> str:
    """The final value as the report writes it; TaskFamilyError if its type is not the declared one."""
    expected = {"number": Fraction, "time": ClockTime, "ordering": Ordering}[family.answer.type]
    if isinstance(value, bool) or not isinstance(value, expected):
        raise TaskFamilyError(
            f"{family.source}: field 'answer.type': the {plan} ends in {value!r}, expected a {family.answer.type} "
            f"(last step must compute a {expected.__name__})"
        )
    if isinstance(value, Fraction):
        return format_number(value, family.answer.decimals)
    return value.render()


def render_plan(steps: Sequence[Step], variables: Mapping[str, Any]) -> str:
    """A plan as one line: 'Step 1: ... Step 2: ...'."""
    return " ".join(f"Step {i}: {s.text.render(variables).rstrip('.')}." for i, s in enumerate(steps, 1))


@dataclass(frozen=True)
class WrongPlan:
    """A wrong plan on one variable assignment: its text, its (wrong) answer and its steps."""

    text: str
    answer: str
    steps: tuple[Step, ...]


def _solve(family: Family, variables: Mapping[str, Any]) -> tuple[str, list[WrongPlan]] | None:
    """(gold answer, wrong plans with an answer and a text of their own) or None if the sample violates a condition."""
    try:
        env = run_plan(family.steps, variables)
        if not all(c.evaluate(env) is True for c in family.conditions):
            return None
    except EvalFailure:
        return None
    gold = format_answer(family, env[family.steps[-1].name])
    gold_plan = render_plan(family.steps, variables)
    wrong: list[WrongPlan] = []
    for mutation in family.mutations:
        try:
            value = run_plan(mutation.steps, variables)[mutation.steps[-1].name]
        except EvalFailure:
            continue  # this wrong plan is undefined for these values (e.g. divides by zero)
        answer = format_answer(family, value, f"mutation {mutation.id!r}")
        text = render_plan(mutation.steps, variables)
        if answer != gold and text != gold_plan and text not in {w.text for w in wrong}:
            wrong.append(WrongPlan(text, answer, mutation.steps))
    return gold, wrong


def _combined_plan(family: Family, variables: Mapping[str, Any], a: WrongPlan, b: WrongPlan) -> WrongPlan | None:
    """A+B (factorial.combined) when it runs and ends in a value of the answer type, else None."""
    steps = combined(family.steps, a.steps, b.steps, frozenset(v.name for v in family.variables))
    if steps is None:
        return None
    try:
        answer = format_answer(family, run_plan(steps, variables)[steps[-1].name])
    except (EvalFailure, TaskFamilyError):  # undefined here, or no longer an answer: not a plan to show
        return None
    return WrongPlan(render_plan(steps, variables), answer, steps)


Corner = tuple[WrongPlan, WrongPlan, WrongPlan]  # (A, B, A+B)


def corner_sets(family: Family, variables: Mapping[str, Any], gold: str, wrong: Sequence[WrongPlan]) -> list[Corner]:
    """Every (A, B, A+B) that makes a 2×2 factorial with the gold plan: A and B change disjoint steps,
    and A+B runs, reads differently from the gold plan, A and B, and answers differently from all three."""
    gold_plan = render_plan(family.steps, variables)
    corners = []
    for a, b in itertools.combinations(wrong, 2):
        both = _combined_plan(family, variables, a, b)
        if both is None or both.answer in {gold, a.answer, b.answer} or both.text in {gold_plan, a.text, b.text}:
            continue
        corners.append((a, b, both))
    return corners


def _plan_options(family: Family, variables: Mapping[str, Any], gold: str, wrong: Sequence[WrongPlan],
                  seed: int, index: int) -> list[str]:
    """The gold plan and its distractors, shuffled: a 2×2 factorial where one exists, else the
    distractors that leave the gold plan the least central (factorial.least_central_subsets); among
    those, the set nearest the instance's target length rank (options.blocked_rank)."""
    gold_plan = render_plan(family.steps, variables)
    rng = derive_rng(seed, family.id, "plans", index)
    corners = corner_sets(family, variables, gold, wrong)
    if corners:
        candidates = [[w.text for w in corner] for corner in corners]
    else:
        texts = [w.text for w in wrong]
        subsets = least_central_subsets(gold_plan, texts, MAX_PLAN_OPTIONS - 1, MIN_WRONG_PLANS)
        candidates = [[texts[i] for i in subset] for subset in subsets]
    n_options = len(candidates[0]) + 1
    target = blocked_rank(lambda block: derive_rng(seed, family.id, "ranks", n_options, block), index, n_options)
    chosen = nearest_rank_choice(len(gold_plan), [[len(t) for t in c] for c in candidates], rng, target)
    options = [gold_plan, *candidates[chosen]]
    rng.shuffle(options)
    return options


def _length_balanced_options(correct: str, distractors: list[str], max_options: int, rng: random.Random) -> list[str]:
    """The correct option plus up to max_options - 1 distractors, shuffled; the correct one's rank by
    length is balanced (options.balanced_subset) so that option length carries no cue."""
    lengths = [len(d) for d in distractors]
    size = unbiased_size(len(correct), lengths, max_options - 1, MIN_WRONG_PLANS)
    chosen = balanced_subset(len(correct), lengths, size, rng)
    options = [correct] + [distractors[i] for i in chosen]
    rng.shuffle(options)
    return options


def build_instance(
    family: Family, variables: Mapping[str, Any], seed: int, index: int, canonical: bool = False
) -> Instance | None:
    """The instance for one variable assignment, or None when the assignment is rejected."""
    solved = _solve(family, variables)
    if solved is None or len(solved[1]) < MIN_WRONG_PLANS:
        return None
    gold, wrong = solved
    gold_plan = render_plan(family.steps, variables)
    plans = _plan_options(family, variables, gold, wrong, seed, index)
    # Answer options: the single wrong plans' answers (never A+B's), drawn exactly as before plan options
    # became factorials, from the same stream advanced past the plan draw it then made, so that execution
    # outcomes stay comparable with runs already stored.
    rng = derive_rng(seed, family.id, "options", index)
    _length_balanced_options(gold_plan, [w.text for w in wrong], MAX_PLAN_OPTIONS, rng)
    wrong_answers = sorted({w.answer for w in wrong})  # sorted so that only rng decides what is shown, in what order
    if canonical:
        # Canonical instances (the report's seed problems, at most one per family) offer every wrong answer,
        # so that the mistakes the report describes (2:45 PM, 1080) can be picked; too few to carry a cue.
        answers = [gold] + wrong_answers
        rng.shuffle(answers)
    else:
        answers = _length_balanced_options(gold, wrong_answers, MAX_ANSWER_OPTIONS, rng)
    return Instance(
        family=family.id,
        index=index,
        seed=seed,
        question=family.question.render(variables),
        answer=gold,
        answer_type=family.answer.type,
        tolerance=family.answer.tolerance,
        n_steps=family.n_steps,
        variables={name: to_plain(value) for name, value in variables.items()},
        steps=tuple(s.text.render(variables).rstrip(".") for s in family.steps),
        plan_question=family.plan_question.render(variables),
        plan_options=tuple(plans),
        correct_option=plans.index(gold_plan),
        answer_options=tuple(answers),
        correct_answer_option=answers.index(gold),
        canonical=canonical,
    )


def _assignment_key(variables: Mapping[str, Any]) -> str:
    return json.dumps({k: to_plain(v) for k, v in variables.items()}, sort_keys=True)


def _sample(family: Family, rng: random.Random) -> dict[str, Any]:
    # Sorted by name so the draw order never depends on how the file (or a dict) was ordered.
    return {v.name: v.sample(rng) for v in sorted(family.variables, key=lambda v: v.name)}


def check_family(family: Family) -> None:
    """Load-time check: the canonical assignment satisfies the conditions, gives its stated answer,
    and has enough wrong plans. Raises TaskFamilyError naming the family file."""
    if family.canonical_variables is None:
        return
    solved = _solve(family, family.canonical_variables)
    if solved is None:
        raise TaskFamilyError(
            f"{family.source}: field 'canonical': the canonical variables fail to evaluate or violate a condition"
        )
    if len(solved[1]) < MIN_WRONG_PLANS:
        raise TaskFamilyError(
            f"{family.source}: field 'mutations': on the canonical variables only {len(solved[1])} wrong plan(s) give an "
            f"answer different from the gold {solved[0]!r}; expected at least {MIN_WRONG_PLANS}"
        )
    instance = build_instance(family, family.canonical_variables, 0, 0, canonical=True)
    assert instance is not None
    if family.canonical_answer is not None and instance.answer != family.canonical_answer:
        raise TaskFamilyError(
            f"{family.source}: field 'canonical.answer': expected {family.canonical_answer!r} "
            f"but the gold steps compute {instance.answer!r}"
        )


def _family_instances(family: Family, n: int, seed: int, include_canonical: bool) -> list[Instance]:
    instances: list[Instance] = []
    seen: set[str] = set()
    if include_canonical and family.canonical_variables is not None and n > 0:
        instances.append(build_instance(family, family.canonical_variables, seed, 0, canonical=True))
        seen.add(_assignment_key(family.canonical_variables))
    allow_duplicates, tries, attempt = False, 0, 0
    while len(instances) < n:
        attempt += 1
        tries += 1
        if tries > MAX_TRIES:
            if not instances:
                raise TaskFamilyError(
                    f"{family.source}: field 'conditions': no sample out of {MAX_TRIES} satisfies the conditions "
                    f"(and leaves {MIN_WRONG_PLANS} distinct wrong plans); widen the variable domains or relax the conditions"
                )
            log.warning("%s: only %d distinct instances exist; repeating assignments", family.id, len(seen))
            allow_duplicates, tries = True, 0
        variables = _sample(family, derive_rng(seed, family.id, "sample", attempt))
        key = _assignment_key(variables)
        if key in seen and not allow_duplicates:
            continue
        instance = build_instance(family, variables, seed, len(instances))
        if instance is not None:
            instances.append(instance)
            seen.add(key)
            tries = 0
    return instances


def generate_instances(
    families: Iterable[Family], n_per_family: int, seed: int = 0, include_canonical: bool = False
) -> list[Instance]:
    """`n_per_family` instances of each family (families in id order), deterministic in `seed`.

    With `include_canonical=True`, instance 0 of a family that declares a canonical assignment is
    that assignment (canonical=True). Assignments are distinct while the domain allows it.
    """
    if isinstance(n_per_family, bool) or not isinstance(n_per_family, int) or n_per_family < 0:
        raise ValueError(f"n_per_family must be a whole number ≥ 0, got {n_per_family!r}")
    ordered = sorted(families, key=lambda f: f.id)
    return [inst for fam in ordered for inst in _family_instances(fam, n_per_family, seed, include_canonical)]


CANONICAL_FAMILIES = (
    "discount_coupon",
    "time_duration",
    "financial_compound",
    "recipe_scale",
    "unit_chain",
    "transitive_order",
    "task_schedule",
)


def canonical_instances(families: Iterable[Family]) -> list[Instance]:
    """The report's seven seed problems, in the report's order, each with canonical=True (seed 0).

    `families` are the loaded families (`load_families()`): generation never reads files, so the
    loader may use this module without the two importing each other."""
    by_id = {f.id: f for f in families}
    missing = [name for name in CANONICAL_FAMILIES if name not in by_id or by_id[name].canonical_variables is None]
    if missing:
        raise TaskFamilyError(f"canonical families missing or without a 'canonical' section: {missing}")
    return [build_instance(by_id[name], by_id[name].canonical_variables, 0, 0, canonical=True) for name in CANONICAL_FAMILIES]
