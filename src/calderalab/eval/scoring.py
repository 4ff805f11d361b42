"""Turning option scores into picks: debiased letter scoring, cloze and answer scoring. Pure Python.

No torch, no model: these functions take the log-likelihoods a backend returned and decide which
option was chosen, recording what the validity statistics need (`ChoiceDetail`), among them the
steps each plan option shares with the others (`step_overlap`).

Two rules keep a pick from being won by a surface cue:
- letters: an instance with k options is scored in all k cyclic rotations, so each option sits once
  at each letter; an option's score is its letter's log-likelihood summed over the rotations. A
  constant preference for one letter adds the same amount to every option and cancels.
- ties (exactly equal scores, up to float rounding) are broken by a draw seeded by the instance uid
  and probe, never by "the first option": a scorer that cannot tell options apart lands on each
  position equally often, so it scores at chance instead of at the first option's share.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Sequence

from calderalab.eval.types import ChoiceDetail, ChoiceMode

TIE_TOLERANCE = 1e-9  # relative and absolute: sums of the same numbers in another order differ in the last bits
_STEP_MARKER = re.compile(r"(?:^|\s)Step \d+:\s*")  # as tasks.generate.render_plan writes a plan


def plan_steps(plan: str) -> tuple[str, ...]:
    """The step texts of a plan written 'Step 1: ... Step 2: ...', in order (empty without markers)."""
    parts = _STEP_MARKER.split(plan)
    return tuple(p.strip() for p in parts[1:])


def step_overlap(plans: Sequence[str]) -> tuple[int, ...]:
    """Per option, the (step position, step text) pairs it shares with the other options, summed over them.

    overlap[j] = Σ_{i ≠ j} #{p : step p of plan i == step p of plan j}. When every wrong plan is the gold
    plan with one step changed, the gold one shares the most (it is the centroid of the option set), so
    "pick the largest overlap" finds it without reading the problem; the validity statistics report
    that rule. Texts without "Step n:" markers (answers) have no steps and overlap 0.
    """
    steps = [plan_steps(p) for p in plans]
    return tuple(
        sum(sum(a == b for a, b in zip(mine, other)) for i, other in enumerate(steps) if i != j)
        for j, mine in enumerate(steps)
    )


def seeded_argmax(values: Sequence[float], key: str) -> int:
    """Index of the largest value; exact ties broken by a draw seeded by `key` (stable across runs)."""
    if not values:
        raise ValueError("seeded_argmax needs at least one value")
    top = max(values)
    best = [i for i, v in enumerate(values) if math.isclose(v, top, rel_tol=TIE_TOLERANCE, abs_tol=TIE_TOLERANCE)]
    if len(best) == 1:
        return best[0]
    digest = hashlib.sha256(key.encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big")).choice(best)


def rotation_sums(rotations: Sequence[Sequence[float]]) -> tuple[float, ...]:
    """Per option, its letter's log-likelihood summed over the k cyclic rotations.

    rotations[r][p]: log-likelihood of letter p in rotation r, which shows option (p + r) mod k at
    letter p; so option j sits at letter (j − r) mod k in rotation r.  (k, k) -> (k,)
    """
    k = len(rotations)
    if k < 2 or any(len(row) != k for row in rotations):
        raise ValueError(f"rotation scores must be k × k with k >= 2, got {[len(r) for r in rotations]}")
    return tuple(sum(rotations[r][(j - r) % k] for r in range(k)) for j in range(k))


def letters_detail(rotations: Sequence[Sequence[float]], correct: int, lengths: Sequence[int], key: str,
                   overlap: Sequence[int] = ()) -> ChoiceDetail:
    """The debiased pick over all rotations, and the raw pick from rotation 0 alone."""
    sums = rotation_sums(rotations)
    return ChoiceDetail(
        mode="letters", n_options=len(sums), correct=correct, chosen=seeded_argmax(sums, key),
        raw_chosen=seeded_argmax(rotations[0], key + "|raw"), lengths=tuple(lengths),
        scores=tuple(round(v, 6) for v in sums), rotations=tuple(tuple(round(v, 6) for v in row) for row in rotations),
        overlap=tuple(overlap),
    )


def continuation_detail(
    mode: ChoiceMode, logliks: Sequence[float], n_tokens: Sequence[int], correct: int, lengths: Sequence[int],
    key: str, normalize: bool, overlap: Sequence[int] = (),
) -> ChoiceDetail:
    """The pick among continuations (`cloze` plans or `answers`), by mean log-likelihood per token when
    `normalize` (summed log-likelihood favours short continuations), else by the sum."""
    if len(logliks) != len(n_tokens):
        raise ValueError(f"{len(logliks)} log-likelihoods for {len(n_tokens)} token counts")
    values = [ll / max(n, 1) for ll, n in zip(logliks, n_tokens)] if normalize else list(logliks)
    chosen = seeded_argmax(values, key)
    return ChoiceDetail(mode=mode, n_options=len(values), correct=correct, chosen=chosen, raw_chosen=chosen,
                        lengths=tuple(lengths), scores=tuple(round(v, 6) for v in values), overlap=tuple(overlap))


def generated_detail(chosen: int | None, correct: int, lengths: Sequence[int], overlap: Sequence[int] = ()) -> ChoiceDetail:
    """A letter parsed from a greedy reply (None: no valid letter named)."""
    return ChoiceDetail(mode="generated", n_options=len(lengths), correct=correct, chosen=chosen, raw_chosen=chosen,
                        lengths=tuple(lengths), overlap=tuple(overlap))
