"""Planted backends: models that are wrong (or right) in a known way, to show a measurement can fail.

Each implements the runner's `ScoringBackend` protocol without any model: it reads the rendered
prompt and the candidate continuations and prefers one option by a fixed rule. The validity tests
run the real runner and statistics on them and check that the numbers report exactly the planted
behaviour: a first-letter or longest-option scorer lands at chance, an oracle at 100%, and the
raw (rotation-0) letter shares show the position bias that debiasing removed. `consensus` reads no
problem at all, only which plan shares the most steps with the others.

Every continuation is "tokenised" as one token per character, so summed and per-token scores
differ in the way real ones do. No torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence

from calderalab.eval.backends import Generation, OptionScores, Prompt
from calderalab.eval.probes import LETTERS
from calderalab.eval.scoring import seeded_argmax, step_overlap
from calderalab.eval.types import Instance

# Per-character log-likelihoods: the preferred option is far more likely than the rest.
PREFERRED, OTHER = -0.1, -1.0
_LETTERED = re.compile(r"^([A-J])\) (.*)$", re.MULTILINE)

# (prompt text, option texts as the model sees them) -> index of the preferred option, the indices of
# equally preferred ones, or None for no preference
Rule = Callable[[str, Sequence[str]], int | Collection[int] | None]


def prompt_text(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


def shown_options(text: str, continuations: Sequence[str]) -> list[str]:
    """The texts the options stand for: the lettered lines of the prompt when the continuations are
    letters (" A", " B" …), else the continuations themselves."""
    letters = [c.strip() for c in continuations]
    if all(len(c) == 1 and c in LETTERS for c in letters):
        lettered = dict(_LETTERED.findall(text))
        return [lettered.get(c, "") for c in letters]
    return [c.strip() for c in continuations]


def _as_set(preferred: int | Collection[int] | None) -> set[int]:
    if preferred is None:
        return set()
    return {preferred} if isinstance(preferred, int) else set(preferred)


class PlantedBackend:
    """A backend whose choice follows `rule`; generation replies `reply(prompt text)` (or nothing)."""

    def __init__(self, rule: Rule, reply: Callable[[str], str] | None = None, per_token: float | None = None) -> None:
        self.rule = rule
        self.reply = reply
        self.per_token = per_token  # a constant per-character score for every option (no preference at all)

    def choice_scores(self, items: Sequence[tuple[Prompt, Sequence[str]]], assistant_prefix: str = "",
                      on_batch: Callable[[int], None] | None = None) -> list[OptionScores]:
        out = []
        for prompt, continuations in items:
            text = prompt_text(prompt)
            preferred = set() if self.per_token is not None else _as_set(self.rule(text, shown_options(text, continuations)))
            lengths = [max(len(c), 1) for c in continuations]
            rate = [self.per_token if self.per_token is not None else (PREFERRED if i in preferred else OTHER)
                    for i in range(len(continuations))]
            out.append(OptionScores(tuple(r * n for r, n in zip(rate, lengths)), tuple(lengths)))
            if on_batch is not None:
                on_batch(len(continuations))
        return out

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int, stop_at_answer: bool = True,
                 on_batch: Callable[[int], None] | None = None) -> list[Generation]:
        replies = [self.reply(prompt_text(p)) if self.reply else "" for p in prompts]
        if on_batch is not None:
            on_batch(len(prompts))
        return [Generation(r, len(r), False, "answer" if r else "eos") for r in replies]


def position(index: int = 0) -> PlantedBackend:
    """Always the option at `index` (letter A for 0), whatever it says; in generation, that letter."""
    return PlantedBackend(lambda text, options: index if index < len(options) else None,
                          reply=lambda text: f"Answer: {LETTERS[index]}\n")


def longest() -> PlantedBackend:
    """Always the option with the longest text (the length cue a summed log-likelihood rewards)."""
    return PlantedBackend(lambda text, options: max(range(len(options)), key=lambda i: (len(options[i]), -i)))


def shortest() -> PlantedBackend:
    """Always the option with the shortest text."""
    return PlantedBackend(lambda text, options: min(range(len(options)), key=lambda i: (len(options[i]), i)))


def _most_shared(options: Sequence[str]) -> list[int]:
    overlap = step_overlap(options)
    return [i for i, v in enumerate(overlap) if v == max(overlap)]


def consensus() -> PlantedBackend:
    """Always the plan sharing the most (step position, step text) pairs with the other options, ties
    equally preferred; in generation, one of the tied letters drawn by the prompt. Reads no problem."""

    def reply(text: str) -> str:
        shown = _LETTERED.findall(text)
        if not shown:
            return ""
        tied = _most_shared([option for _, option in shown])
        pick = tied[seeded_argmax([0.0] * len(tied), text)]
        return f"Answer: {shown[pick][0]}\n"

    return PlantedBackend(lambda text, options: _most_shared(options), reply)


def per_token_constant(logprob: float = -1.0) -> PlantedBackend:
    """Every token equally likely: a summed score prefers the shortest continuation, a per-token one ties."""
    return PlantedBackend(lambda text, options: None, per_token=logprob)


def oracle(instances: Sequence[Instance]) -> PlantedBackend:
    """Knows every right answer and plan, wherever the option is placed, in every scoring mode."""
    by_question = {inst.question.strip(): inst for inst in instances}

    def find(text: str) -> Instance:
        hits = [inst for q, inst in by_question.items() if q and q in text]
        if len(hits) != 1:
            raise ValueError(f"oracle: the prompt matches {len(hits)} known instances")
        return hits[0]

    def rule(text: str, options: Sequence[str]) -> int | None:
        inst = find(text)
        right = {inst.answer, inst.plan_options[inst.correct_option] if inst.plan_options else None}
        hits = [i for i, o in enumerate(options) if o in right]
        return hits[0] if hits else None

    def reply(text: str) -> str:
        inst = find(text)
        if "Reply with the letter" in text:
            shown = dict(_LETTERED.findall(text))
            letter = next(k for k, v in shown.items() if v == inst.plan_options[inst.correct_option])
            return f"Answer: {letter}\n"
        return f"Answer: {inst.answer}\n"

    return PlantedBackend(rule, reply)
