"""Final-answer extraction from model outputs, and exact comparison. No torch.

Rules (what a careful reviewer expects):

1. If the text has answer tags, the LAST tag wins: `Answer: x`, `**Answer:** x`, `Final answer: x`,
   `The answer is x`, `\\boxed{x}`, `#### x`. Its segment is the rest of that line (or the next
   non-empty line when the tag ends its line; for `\\boxed{}` the braces' content), and the FIRST
   value of the wanted type in the segment is the answer ("Answer: 15. Step 2: 20" -> 15).
   A tag with no parseable value is a failure ("tagged answer unparseable"), not a fallback.
2. Without any tag, the LAST value of the type anywhere in the text is taken (`tagged=False`).
3. Numbers: `$`/`€`/`£`, thousands commas (1,168), units or words after ("6.3 km", "15 dollars"),
   trailing dots, percentages (15% -> 15), fractions "3/4", "1 1/2" and LaTeX \\frac{3}{4}, decimals, negatives
   (also U+2212). Written-out number words are not parsed. Compared exactly as rationals:
   |parsed - expected| <= tolerance, so 6.30 == 6.3 and no float rounding decides anything.
4. Times: 12-h ("4:15 PM", "4:15pm", "4.15 p.m.", "4 PM"), 24-h ("16:15"), "noon", "midnight".
   A time written without AM/PM and an hour from 1 to 12 ("4:15") is ambiguous: it is accepted
   when it matches the expected time on the 12-hour clock (documented leniency); hours 0 and
   13-23 are read as 24-h.
5. Orderings: "D<C<B<A", "A > B > C > D" (reversed to smallest-first), "D, C, B, A" and "D, C, B
   and A" (read in the order asked for, i.e. smallest first), and word lists like "D is the
   shortest, then C, then B, then A". Word lists whose first superlative is a "largest" word
   (tallest, oldest, ...) are reversed. Limits: entity names must be single words; when the
   expected answer is known (`is_correct`), only its entity names are taken from word lists;
   comparisons between non-adjacent names in prose are not resolved.
6. Letters (multiple-choice probes): "B", "(B)", "B)", "Option B", "The answer is B.", "**B**".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

ParseType = Literal["number", "time", "ordering", "letter", "text"]
LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class ParseResult:
    """`value`: canonical string ("15", "4:15 PM", "4:15" when ambiguous, "D<C<B<A", "B") or None.
    `tagged`: the value came from an answer tag. `failure`: why nothing was parsed (None on success)."""

    value: str | None
    tagged: bool
    failure: str | None = None


# ------------------------------------------------------------------------------------------ tags
_TAG_RE = re.compile(
    r"(?:\*\*|__)?\s*(?:final\s+answer|answer)\s*(?:\*\*|__)?\s*(?:is\s*)?(?:[:=]|\bis\b)\s*(?:\*\*|__)?"
    r"|####"
    r"|(?:the\s+)?(?:correct\s+)?answer\s+is\b",
    re.IGNORECASE,
)
_BOXED_RE = re.compile(r"\\boxed\s*\{")


def _boxed_content(text: str, start: int) -> str:
    depth, i = 1, start
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[start : i - 1] if depth == 0 else text[start:]


def tagged_segments(text: str) -> list[tuple[int, str]]:
    """(position, segment) of every answer tag, in text order."""
    segments: list[tuple[int, str]] = []
    for match in _TAG_RE.finditer(text):
        rest = text[match.end() :]
        line, _, after = rest.partition("\n")
        if not line.strip():  # "Answer:\n15"
            line = next((ln for ln in after.split("\n") if ln.strip()), "")
        segments.append((match.start(), line))
    for match in _BOXED_RE.finditer(text):
        segments.append((match.start(), _boxed_content(text, match.end())))
    return sorted(segments)


# --------------------------------------------------------------------------------------- numbers
_NUM_RE = re.compile(
    r"(?<![\w.])(?P<sign>[-−]?)\s?[$€£]?\s?(?P<sign2>[-−]?)"
    r"(?:(?P<whole>\d+)[ \t]+(?P<fn>\d+)/(?P<fd>\d+)"  # mixed fraction 1 1/2
    r"|(?P<num>\d+)/(?P<den>\d+)"  # fraction 3/4
    r"|(?P<dec>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+))"  # 1,168 / 6.30 / .5
    r"(?![\d/]|,\d{3})"
)


_LATEX_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}")


def _numbers(segment: str) -> list[Fraction]:
    segment = _LATEX_FRAC_RE.sub(r"\1/\2", segment)  # \frac{3}{4} -> 3/4
    values = []
    for m in _NUM_RE.finditer(segment):
        negative = bool(m.group("sign") or m.group("sign2"))
        if m.group("whole"):
            if int(m.group("fd")) == 0:
                continue
            value = int(m.group("whole")) + Fraction(int(m.group("fn")), int(m.group("fd")))
        elif m.group("num"):
            if int(m.group("den")) == 0:
                continue
            value = Fraction(int(m.group("num")), int(m.group("den")))
        else:
            value = Fraction(m.group("dec").replace(",", ""))
        values.append(-value if negative else value)
    return values


def _render_number(x: Fraction) -> str:
    if x.denominator == 1:
        return str(x.numerator)
    d = x.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d != 1:
        return f"{x.numerator}/{x.denominator}"
    text = f"{float(x):.12f}" if abs(x) < 10**6 else str(float(x))
    return text.rstrip("0").rstrip(".")


# ----------------------------------------------------------------------------------------- times
_TIME_RE = re.compile(
    r"\b(?P<h>\d{1,2})(?:[:.](?P<m>\d{2}))?\s*(?P<ap>[ap])\.?\s?m\b\.?"  # 4:15 PM, 4.15 p.m., 4pm
    r"|\b(?P<h24>\d{1,2}):(?P<m24>\d{2})\b(?!\s*[ap]\.?\s?m\b)"  # 16:15, 4:15
    r"|\b(?P<word>noon|midnight)\b",
    re.IGNORECASE,
)


def _times(segment: str) -> list[str]:
    out = []
    for m in _TIME_RE.finditer(segment):
        if m.group("word"):
            out.append("12:00 PM" if m.group("word").lower() == "noon" else "12:00 AM")
        elif m.group("ap"):
            hour, minute = int(m.group("h")), int(m.group("m") or 0)
            if 1 <= hour <= 12 and minute < 60:
                out.append(f"{hour}:{minute:02d} {m.group('ap').upper()}M")
        else:
            hour, minute = int(m.group("h24")), int(m.group("m24"))
            if hour > 23 or minute > 59:
                continue
            if 1 <= hour <= 12:
                out.append(f"{hour}:{minute:02d}")  # ambiguous half of the day
            else:
                out.append(f"{hour % 12 or 12}:{minute:02d} {'AM' if hour < 12 else 'PM'}")
    return out


def _time_matches(parsed: str, expected: str) -> bool:
    if parsed == expected:
        return True
    return " " not in parsed and expected.split(" ")[0] == parsed


# ------------------------------------------------------------------------------------- orderings
_NAME = r"[A-Za-z][\w']*"
_CHAIN_RE = re.compile(rf"{_NAME}(?:\s*(?:<|>)\s*{_NAME})+")
_LARGEST_WORDS = re.compile(r"\b(tallest|oldest|largest|biggest|heaviest|highest|longest|fastest|most|greatest)\b", re.I)
_SMALLEST_WORDS = re.compile(r"\b(shortest|youngest|smallest|lightest|lowest|slowest|least|fewest)\b", re.I)
_STOPWORDS = {
    "The", "Then", "So", "Answer", "Final", "Order", "From", "Shortest", "Tallest", "Is", "And", "Therefore",
    "Thus", "Finally", "First", "Next", "Last", "Step", "I", "It", "This", "That", "Which", "We", "Ordering",
}  # fmt: skip


def _chains(segment: str) -> list[str]:
    out = []
    for chain in _CHAIN_RE.findall(segment):
        ops = set(re.findall(r"[<>]", chain))
        if len(ops) != 1:
            continue
        names = [n.strip() for n in re.split(r"[<>]", chain)]
        if len(set(names)) != len(names):
            continue
        out.append("<".join(names if ops == {"<"} else names[::-1]))
    return out


def _word_list(segment: str, entities: tuple[str, ...] | None) -> str | None:
    words = re.findall(_NAME, segment)
    if entities:
        names = [w for w in words if w in entities]
    else:
        names = [w for w in words if w[0].isupper() and w not in _STOPWORDS]
    names = list(dict.fromkeys(names))
    if len(names) < 2:
        return None
    largest, smallest = _LARGEST_WORDS.search(segment), _SMALLEST_WORDS.search(segment)
    if largest and (not smallest or largest.start() < smallest.start()):
        names.reverse()
    return "<".join(names)


def _orderings(segment: str, entities: tuple[str, ...] | None, last_line_only: bool) -> list[str]:
    chains = _chains(segment)
    if not chains and _CHAIN_RE.search(segment):
        return []  # mixed directions like "A < B > C": no ordering, and no guessing from the words
    if entities:
        chains = [c for c in chains if set(c.split("<")) == set(entities)] or chains
    if chains:
        return chains
    if last_line_only:
        lines = [ln for ln in segment.split("\n") if ln.strip()]
        segment = lines[-1] if lines else ""
    found = _word_list(segment, entities)
    return [found] if found else []


# --------------------------------------------------------------------------------------- letters
_LETTER_STRONG = re.compile(
    rf"(?:option|choice|plan)\s*\(?([{LETTERS}])\)?(?![\w])|\(([{LETTERS}])\)|(?<![\w(])([{LETTERS}])\)|\*\*([{LETTERS}])\*\*",
    re.IGNORECASE,
)


def _letters(segment: str, tagged: bool) -> list[str]:
    strong = [next(g for g in m.groups() if g).upper() for m in _LETTER_STRONG.finditer(segment)]
    if tagged:
        # "A"/"I" followed by a lower-case word are the article/pronoun ("I think B", "A good plan is C").
        bare = next(
            (
                m
                for m in re.finditer(rf"(?<![\w'])([{LETTERS}])(?![\w'])", segment)
                if not (m.group(1) in "AI" and re.match(r"\s+[a-z]", segment[m.end() :]))
            ),
            None,
        )
        first = [bare.group(1)] if bare else []
        # The first letter-like token of the tagged segment, unless an explicit "(B)" comes first.
        if strong and (not bare or segment.find(strong[0]) <= bare.start()):
            return strong[:1]
        return first
    if strong:
        return strong
    stripped = segment.strip().rstrip(".").strip("*").strip()
    if len(stripped) == 1 and stripped in LETTERS:
        return [stripped]
    lead = re.match(rf"\s*([{LETTERS}])[.:](?:\s|$)", segment)
    return [lead.group(1)] if lead else []


# ------------------------------------------------------------------------------------------ API
def _values(segment: str, answer_type: str, tagged: bool, entities: tuple[str, ...] | None) -> list[str]:
    if answer_type == "number":
        return [_render_number(x) for x in _numbers(segment)]
    if answer_type == "time":
        return _times(segment)
    if answer_type == "ordering":
        return _orderings(segment, entities, last_line_only=not tagged)
    if answer_type == "letter":
        return _letters(segment, tagged)
    if answer_type == "text":
        text = segment.strip().strip("*").strip().rstrip(".").strip()
        return [text.lower()] if text else []
    raise ValueError(f"unknown answer_type {answer_type!r}; expected number, time, ordering, letter or text")


def parse(text: str, answer_type: str, entities: tuple[str, ...] | None = None) -> ParseResult:
    """Extract the final answer of `answer_type` from a model output (rules in the module docstring)."""
    if answer_type not in ("number", "time", "ordering", "letter", "text"):
        raise ValueError(f"unknown answer_type {answer_type!r}; expected number, time, ordering, letter or text")
    if not text or not text.strip():
        return ParseResult(None, False, "empty output")
    segments = tagged_segments(text)
    if segments:
        values = _values(segments[-1][1], answer_type, True, entities)
        if values:
            return ParseResult(values[0], True)
        return ParseResult(None, True, f"tagged answer unparseable as {answer_type}: {segments[-1][1].strip()[:60]!r}")
    if answer_type == "text":
        return ParseResult(None, False, "no answer tag")
    values = _values(text, answer_type, False, entities)
    if values:
        return ParseResult(values[-1], False)
    return ParseResult(None, False, f"no {answer_type} found in the output")


def parse_answer(text: str, answer_type: str) -> str | None:
    """Canonical string form of the final answer, or None when nothing could be parsed."""
    return parse(text, answer_type).value


def is_correct(text: str, expected: str, answer_type: str, tolerance: float = 0.0) -> bool:
    """Does the output's final answer equal `expected` (written as the report writes it)?"""
    entities = tuple(expected.split("<")) if answer_type == "ordering" else None
    parsed = parse(text, answer_type, entities).value
    if parsed is None:
        return False
    if answer_type == "number":
        exact = _numbers(expected)
        if len(exact) != 1:
            raise ValueError(f"expected answer {expected!r} is not one number")
        got = Fraction(parsed)
        return abs(got - exact[0]) <= Fraction(str(tolerance))
    if answer_type == "time":
        return _time_matches(parsed, expected.strip().upper())
    if answer_type == "text":
        return parsed == expected.strip().lower()
    return parsed == expected.strip().replace(" ", "")
