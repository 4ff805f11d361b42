"""The two probes of the Goodhart Gap evaluation, as pure strings. No torch, no transformers.

Each instance is asked two separate questions, each in its OWN context (never one chat):
- execution: solve the problem, end with a line `Answer: <answer>`;
- understanding: which plan of steps is right, answered by letter.

For log-likelihood scoring (the lm-evaluation-harness way) the same questions are asked for a
direct answer and the assistant turn is pre-filled: `choice` scores each option letter after
`Answer:` in every cyclic rotation of the options (so no letter position can win), `cloze` scores
each plan's own text after `Plan:` with no letters at all; the execution probe scores each
candidate answer after `Answer:` (" 15"). Rendering (here) is kept apart from tokenising and the
model call (`eval.backends`) and from scoring (`eval.runner`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from calderalab.eval.types import Instance

Message = dict[str, str]

LETTERS = "ABCDEFGHIJ"
ANSWER_PREFIX = "Answer:"

# How the final line must be written, per answer type. Placeholders, not sample values: a small
# model copies an example value ("Answer: 42") into its reply, which could even be right by chance.
_FORMAT_HINTS = {
    "number": "Write the number only, without units or commas: `Answer: <number>`.",
    "time": "Write the clock time with AM or PM: `Answer: <hour>:<minutes> <AM or PM>`.",
    "ordering": "Write the names in increasing order joined by '<', with no spaces: `Answer: <name><<name><<name>`.",
    "text": "Write a short phrase only: `Answer: <phrase>`.",
}


@dataclass(frozen=True)
class ChoiceItem:
    """One probe rendered for log-likelihood scoring.

    The model sees `messages` (through the chat template), then the assistant turn starts with
    `assistant_prefix`; `continuations[i]` is scored as the text right after it. `correct`
    indexes the right continuation.
    """

    messages: tuple[Message, ...]
    assistant_prefix: str
    continuations: tuple[str, ...]
    correct: int

    def __post_init__(self) -> None:
        if len(self.continuations) < 2:
            raise ValueError(f"a choice needs at least 2 continuations, got {self.continuations!r}")
        if not 0 <= self.correct < len(self.continuations):
            raise ValueError(f"correct={self.correct} outside 0..{len(self.continuations) - 1}")


def format_hint(answer_type: str) -> str:
    """The sentence that tells the model how to write its final answer."""
    if answer_type not in _FORMAT_HINTS:
        raise ValueError(f"unknown answer_type {answer_type!r}; expected one of {sorted(_FORMAT_HINTS)}")
    return _FORMAT_HINTS[answer_type]


def has_understanding_probe(inst: Instance) -> bool:
    """True when the instance carries plan options (GSM8K rows, for one, do not)."""
    return len(inst.plan_options) >= 2


def execution_messages(inst: Instance, reasoning: bool = True) -> list[Message]:
    """Chat messages of the execution probe.

    reasoning=True (generation scoring): solve step by step, then a final `Answer:` line.
    reasoning=False (choice scoring): the answer alone, so a pre-filled `Answer:` fits.
    """
    if reasoning:
        instruction = (
            "Solve the problem step by step. Then write the final answer on its own last line, "
            f"in the form `{ANSWER_PREFIX} <answer>`."
        )
    else:
        instruction = f"Give only the final answer, in the form `{ANSWER_PREFIX} <answer>`."
    content = f"{inst.question.strip()}\n\n{instruction}\n{format_hint(inst.answer_type)}"
    return [{"role": "user", "content": content}]


def lettered_options(options: tuple[str, ...]) -> str:
    """'A) first\\nB) second ...' for up to ten options."""
    if len(options) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options can be lettered, got {len(options)}")
    return "\n".join(f"{LETTERS[i]}) {text}" for i, text in enumerate(options))


def rotated(options: tuple[str, ...], rotation: int) -> tuple[str, ...]:
    """The options shown in cyclic rotation r: letter p shows option (p + r) mod k."""
    r = rotation % len(options)
    return options[r:] + options[:r]


def understanding_messages(inst: Instance, rotation: int = 0) -> list[Message]:
    """Chat messages of the understanding probe: pick the right plan, answer by letter.

    `rotation` r shows the instance's options cyclically shifted (letter p holds option (p + r) mod k),
    so scoring every rotation puts each option once at each letter. A fresh context: the execution
    probe's question and answer are never shown here.
    """
    if not has_understanding_probe(inst):
        raise ValueError(f"instance {inst.uid} has no plan options, so no understanding probe")
    letters = ", ".join(LETTERS[: len(inst.plan_options)])
    options = rotated(inst.plan_options, rotation)
    content = (
        f"Problem:\n{inst.question.strip()}\n\n{_plan_question(inst)}\n\n{lettered_options(options)}\n\n"
        f"Do not solve the problem. Reply with the letter of the correct plan ({letters}) "
        f"in the form `{ANSWER_PREFIX} <letter>`."
    )
    return [{"role": "user", "content": content}]


def _plan_question(inst: Instance) -> str:
    return inst.plan_question.strip() or "Which plan of steps solves this problem correctly?"


PLAN_PREFIX = "Plan:"


def cloze_messages(inst: Instance) -> list[Message]:
    """The understanding probe without letters: the problem and the plan question, no options shown.

    The assistant turn is pre-filled with `Plan:` and each option's own text is scored as its
    continuation (`understanding_cloze`), so neither a letter nor an option position can win.
    """
    if not has_understanding_probe(inst):
        raise ValueError(f"instance {inst.uid} has no plan options, so no understanding probe")
    content = (f"Problem:\n{inst.question.strip()}\n\n{_plan_question(inst)}\n\n"
               f"Do not solve the problem. State the correct plan as `{PLAN_PREFIX} Step 1: ... Step 2: ...`.")
    return [{"role": "user", "content": content}]


def execution_choice(inst: Instance) -> ChoiceItem:
    """The execution probe for choice scoring: each candidate answer after `Answer:`."""
    if len(inst.answer_options) < 2:
        raise ValueError(
            f"instance {inst.uid} has no answer_options, so its execution probe cannot be "
            "scored by choice; use scoring='generate' for this suite"
        )
    return ChoiceItem(
        messages=tuple(execution_messages(inst, reasoning=False)),
        assistant_prefix=ANSWER_PREFIX,
        continuations=tuple(f" {opt}" for opt in inst.answer_options),
        correct=inst.correct_answer_option,
    )


def understanding_choice(inst: Instance, rotation: int = 0) -> ChoiceItem:
    """The understanding probe for letter scoring in one rotation: each option letter after `Answer:`.

    `correct` is the letter (position) where the right plan sits in this rotation.
    """
    k = len(inst.plan_options)
    return ChoiceItem(
        messages=tuple(understanding_messages(inst, rotation)),
        assistant_prefix=ANSWER_PREFIX,
        continuations=tuple(f" {LETTERS[i]}" for i in range(k)),
        correct=(inst.correct_option - rotation) % k,
    )


def understanding_rotations(inst: Instance) -> list[ChoiceItem]:
    """One letter-scoring item per cyclic rotation of the options (k items for k options)."""
    return [understanding_choice(inst, r) for r in range(len(inst.plan_options))]


def understanding_cloze(inst: Instance) -> ChoiceItem:
    """The understanding probe for cloze scoring: each plan's own text after `Plan:`."""
    return ChoiceItem(
        messages=tuple(cloze_messages(inst)),
        assistant_prefix=PLAN_PREFIX,
        continuations=tuple(f" {text}" for text in inst.plan_options),
        correct=inst.correct_option,
    )


# A finished answer line: "Answer: 15\n", "**Final answer:** 4:15 PM\n", or "Answer:\n15\n".
ANSWER_LINE = re.compile(
    r"^[ \t>*#_-]*(?:the\s+)?(?:final\s+)?answer(?:\s+is)?[ \t*_]*[:：][ \t*_]*"
    r"(?P<value>[^\s\n][^\n]*|\n[ \t]*[^\s\n][^\n]*)\n",
    re.IGNORECASE | re.MULTILINE,
)


def has_complete_answer_line(text: str) -> bool:
    """True once `text` contains an `Answer: ...` line that has a value and is ended by a newline."""
    return ANSWER_LINE.search(text) is not None


_LETTER_TAG = re.compile(
    r"\banswer(?:[^:：\n]*[:：]|\s+is\b:?)[ \t*_(\[]*\n?[ \t*_(\[]*(?:option\s+)?([A-J])\b", re.IGNORECASE
)


def parse_letter(text: str, n_options: int) -> str | None:
    """The option letter chosen in an understanding reply, or None when there is none.

    Prefers the `Answer:` line; else a reply that is just a letter ("B", "B)", "(B) ...").
    Letters outside the first n_options are not accepted.
    """
    valid = LETTERS[:n_options]
    # The last answer tag wins ("Answer: B", "**Answer:** (b)", "The answer is B.").
    tagged = _LETTER_TAG.findall(text)
    if tagged and tagged[-1].upper() in valid:
        return tagged[-1].upper()
    # A bare letter counts only in a one-line reply: a multi-line "A) ... B) ..." echoes the options.
    bare = re.match(r"^\s*[*(\[]*([A-J])(?:[).\]:*]|\s|$)", text)
    if bare and bare.group(1) in valid and len(text.strip().splitlines()) == 1:
        return bare.group(1)
    return None
