"""Is a probe informative for a model? Chance levels, exact tests against chance, surface floors,
letter shares. Pure Python on stored outcomes: no torch, no I/O.

A rate means something only if a scorer that uses no understanding could not reach it:
- chance: for options scored by log-likelihood, the expected rate of a uniform guess, mean(1/k_i)
  over instances (k_i options each), tested exactly with the Poisson-binomial law; for a generated
  reply, the rate of the best constant guess (the most frequent right letter or right answer),
  tested with the exact binomial.
- the surface floor: the best rate of a rule that reads only surface cues of the options — always
  letter X (position), always the longest, always the shortest option, and (where the details carry
  step overlaps) always the plan sharing the most steps with the others, which finds the gold plan
  whenever every wrong plan is the gold one with a step changed (ties share the credit).
  A probe whose options carry such a cue is exposed by a floor above chance.
- a probe is INFORMATIVE for a model when its rate is above chance at p < ALPHA and above the
  surface floor. When the baseline's probe is not informative, its gap figures are not findings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from calderalab.eval.outcomes import InstanceOutcome
from calderalab.eval.stats import binomial_test_greater, poisson_binomial_greater
from calderalab.eval.types import ChoiceDetail, ProbeKind

ALPHA = 0.05
LETTERS = "ABCDEFGHIJ"
SHARED_STEPS_RULE = "most shared steps"
MODE_NAMES = {
    "letters": "letters, debiased over all rotations",
    "cloze": "cloze, mean log-likelihood per token",
    "answers": "answer log-likelihood",
    "generated": "generated letter",
    "generated answer": "generated answer",
}


@dataclass(frozen=True)
class ProbeValidity:
    """One probe of one run against chance and against the surface cues of its options."""

    probe: ProbeKind
    mode: str  # a ChoiceDetail mode, or "generated answer" for generated execution replies
    n: int
    correct: int
    chance: float
    chance_rule: str  # "1/k" or "constant guess '…'"
    p_value: float  # one-sided exact test of `correct` against chance
    floor: float  # the best surface heuristic's rate
    floor_rule: str
    letter_shares: tuple[float, ...] = ()  # share of picks at each letter (debiased pick), lettered modes only
    raw_letter_shares: tuple[float, ...] = ()  # the same for the rotation-0 (first-order) pick
    no_pick: int = 0  # generated replies that named no valid letter

    @property
    def rate(self) -> float:
        return self.correct / self.n

    @property
    def above_chance(self) -> bool:
        return self.p_value < ALPHA

    @property
    def informative(self) -> bool:
        return self.above_chance and self.rate > self.floor

    def verdict(self) -> str:
        """'informative' or the plain reason why not."""
        if not self.above_chance:
            return f"not informative: at chance (p = {self.p_value:.2g} ≥ {ALPHA:g})"
        if self.rate <= self.floor:
            return f"not informative: not above the surface floor ({self.floor_rule} {self.floor:.0%})"
        return "informative"


def _detail_shares(details: Sequence[ChoiceDetail], raw: bool) -> tuple[float, ...]:
    width = max(d.n_options for d in details)
    picks = Counter(d.raw_chosen if raw else d.chosen for d in details)
    return tuple(picks.get(i, 0) / len(details) for i in range(width))


def _tie_share(values: Sequence[int], correct: int, pick_max: bool) -> float:
    target = max(values) if pick_max else min(values)
    ties = [i for i, v in enumerate(values) if v == target]
    return (correct in ties) / len(ties)


def position_name(mode: str, j: int) -> str:
    """'letter B' where options are shown lettered, else 'option 2' (the j-th in the instance's order)."""
    return f"letter {LETTERS[j]}" if mode in ("letters", "generated") else f"option {j + 1}"


def surface_heuristics(details: Sequence[ChoiceDetail]) -> dict[str, float]:
    """Rate of each surface rule on these instances: 'letter A' … (always that position), 'longest
    option', 'shortest option', and 'most shared steps' when every detail has step overlaps (runs
    stored before overlaps were kept have none); a rule that ties between options gets the expected share."""
    width = max(d.n_options for d in details)
    n = len(details)
    mode = details[0].mode
    rules = {position_name(mode, j): sum(d.correct == j for d in details) / n for j in range(width)}
    rules["longest option"] = sum(_tie_share(d.lengths, d.correct, True) for d in details) / n
    rules["shortest option"] = sum(_tie_share(d.lengths, d.correct, False) for d in details) / n
    if all(d.overlap for d in details):
        rules[SHARED_STEPS_RULE] = sum(_tie_share(d.overlap, d.correct, True) for d in details) / n
    return rules


def _best(rules: dict[str, float]) -> tuple[str, float]:
    name = max(rules, key=lambda k: (rules[k], k))
    return name, rules[name]


def _from_details(probe: ProbeKind, outcomes: Sequence[InstanceOutcome]) -> ProbeValidity:
    details = [o.detail(probe) for o in outcomes]
    correct = sum(d.chosen == d.correct for d in details)
    mode = details[0].mode
    rules = surface_heuristics(details)
    floor_rule, floor = _best(rules)
    lettered = mode in ("letters", "generated")
    if mode == "generated":  # a reply: the best constant letter is the chance level
        letter, chance = _best({k: v for k, v in rules.items() if k.startswith("letter ")})
        chance_rule = f"constant guess '{letter.removeprefix('letter ')}'"
        p_value = binomial_test_greater(correct, len(details), chance)
    else:
        chance = sum(1 / d.n_options for d in details) / len(details)
        chance_rule = "1/k"
        p_value = poisson_binomial_greater(correct, [1 / d.n_options for d in details])
    return ProbeValidity(
        probe, mode, len(details), correct, chance, chance_rule, p_value, floor, floor_rule,
        _detail_shares(details, raw=False) if lettered else (), _detail_shares(details, raw=True) if lettered else (),
        sum(d.chosen is None for d in details),
    )


def _generated_answers(outcomes: Sequence[InstanceOutcome]) -> ProbeValidity:
    """Execution by generation: chance is the best constant answer (the most frequent right answer)."""
    answer, count = Counter(o.expected for o in outcomes).most_common(1)[0]
    chance = count / len(outcomes)
    correct = sum(o.executed for o in outcomes)
    rule = f"constant guess '{answer}'"
    return ProbeValidity("execution", "generated answer", len(outcomes), correct, chance, rule,
                         binomial_test_greater(correct, len(outcomes), chance), chance, rule)


def probe_validity(outcomes: Sequence[InstanceOutcome], probe: ProbeKind) -> ProbeValidity | None:
    """Validity of one probe over a run's outcomes; None when no outcome has that probe's details
    (no understanding probe, or a run stored before details were kept)."""
    if probe == "understanding":
        scored = [o for o in outcomes if o.understanding_detail is not None]
        return _from_details("understanding", scored) if scored else None
    scored = [o for o in outcomes if o.execution_detail is not None]
    if scored:
        return _from_details("execution", scored)
    return _generated_answers(outcomes) if outcomes else None


def gap_measurable(understanding: ProbeValidity | None, execution: ProbeValidity | None) -> bool:
    """A Goodhart Gap is a finding only when both of the reference model's probes are informative."""
    return bool(understanding and execution and understanding.informative and execution.informative)


def informative_sentence(label: str, understanding: ProbeValidity | None, execution: ProbeValidity | None) -> str:
    """One plain sentence on whether `label`'s probes can support gap figures."""
    parts = []
    for v in (understanding, execution):
        if v is None:
            continue
        parts.append(f"{v.probe} {v.correct}/{v.n} ({v.rate:.0%}) vs chance {v.chance:.0%} "
                     f"(p = {v.p_value:.2g}, surface floor {v.floor:.0%}): {v.verdict()}")
    lead = (f"{label}: both probes are above chance and above every surface heuristic, so gap figures are measurable"
            if gap_measurable(understanding, execution) else
            f"{label}: gap figures are NOT measurable, because a probe is not informative for this model")
    return lead + ("; " + "; ".join(parts) if parts else "") + "."
