"""Which wrong plans an instance shows: sets in which the gold plan is not the centroid. Pure; no torch, no I/O.

Every wrong plan is the gold plan with a step (sometimes two) changed. Shown next to the gold plan as
a star — gold, gold with step 1 changed, gold with step 2 changed, ... — the gold plan is the option
that shares the most steps with the others, and "pick the most shared plan" finds it without reading
the problem (0.90 of 1280 instances, chance 0.26). Two designs leave no such cue:

- the 2×2 factorial {gold, A, B, A+B}: A and B change disjoint steps, A+B applies both changes.
  Every option then shares exactly as many (position, text) pairs with the others, any corner could
  be the base. The option lengths are L, L+dA, L+dB, L+dA+dB: the gold plan is the longest or the
  shortest only when dA and dB share a sign, so a family needs disjoint pairs of both kinds;
- a star whose arms all change the same steps (every option differs from every other at those steps).

`combined` builds A+B from two of a family's wrong plans (generation runs it and keeps
those whose A+B is executable and answers differently), and one is chosen so that the gold plan's
length rank is uniform (options.blocked_rank, options.nearest_rank_choice); `least_central_subsets` is the fallback
where no pair exists: the distractor sets that minimise the gold plan's overlap advantage.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from fractions import Fraction

from calderalab.eval.scoring import step_overlap
from calderalab.eval.tasks.schema import Step


def _same(a: Step, b: Step) -> bool:
    return (a.name, a.expr.source, a.text.source) == (b.name, b.expr.source, b.text.source)


def touched_steps(gold: Sequence[Step], plan: Sequence[Step]) -> frozenset[int]:
    """Positions at which `plan` differs from the gold plan in name, expression or text."""
    if len(gold) != len(plan):
        raise ValueError(f"a wrong plan must keep the gold step count {len(gold)}, got {len(plan)}")
    return frozenset(p for p, (g, s) in enumerate(zip(gold, plan)) if not _same(g, s))


def well_formed(steps: Sequence[Step], variables: frozenset[str]) -> bool:
    """Step names are distinct and every step reads only variables and earlier steps."""
    known = set(variables)
    for step in steps:
        if step.name in known or not step.expr.names <= known:
            return False
        known.add(step.name)
    return True


def combined(gold: Sequence[Step], a: Sequence[Step], b: Sequence[Step],
             variables: frozenset[str]) -> tuple[Step, ...] | None:
    """A+B: the gold plan with A's changed steps and B's changed steps, or None when the two change a
    common step (they do not commute then) or the result reads a step that it no longer computes."""
    touched_a, touched_b = touched_steps(gold, a), touched_steps(gold, b)
    if not touched_a or not touched_b or touched_a & touched_b:
        return None
    steps = tuple(a[p] if p in touched_a else b[p] if p in touched_b else gold[p] for p in range(len(gold)))
    return steps if well_formed(steps, variables) else None


def overlap_advantage(gold: str, distractors: Sequence[str]) -> Fraction:
    """What 'pick the most shared plan' gains on this option set over a uniform guess: its expected
    credit (1/#tied when the gold plan ties for the most shared steps, else 0) minus 1/k."""
    overlap = step_overlap([gold, *distractors])
    tied = [i for i, v in enumerate(overlap) if v == max(overlap)]
    credit = Fraction(int(0 in tied), len(tied))
    return credit - Fraction(1, len(overlap))


def least_central_subsets(gold: str, distractors: Sequence[str], max_size: int, min_size: int) -> list[tuple[int, ...]]:
    """The subsets (indices, increasing) of min_size..max_size distractors with the smallest overlap
    advantage, and of those the largest: the fallback where no 2×2 factorial exists. The caller
    balances length among them (options.nearest_rank_choice)."""
    sizes = range(min(max_size, len(distractors)), min_size - 1, -1)
    subsets = [s for size in sizes for s in itertools.combinations(range(len(distractors)), size)]
    if not subsets:
        raise ValueError(f"need at least {min_size} distractors, got {len(distractors)}")
    advantage = {s: overlap_advantage(gold, [distractors[i] for i in s]) for s in subsets}
    least = [s for s in subsets if advantage[s] == min(advantage.values())]
    largest = max(len(s) for s in least)
    return [s for s in least if len(s) == largest]
