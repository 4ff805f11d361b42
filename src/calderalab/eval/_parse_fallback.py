"""Minimal stand-in for `calderalab.eval.parse` (built on the `tasks` branch); remove once merged.

Same two functions, same signatures. Reads the value of the last `Answer:` line (or the last
number/time in the text when there is none) and compares it by answer type.
"""

from __future__ import annotations

import re

_ANSWER = re.compile(r"answer(?:\s+is)?[ \t*_]*[:：][ \t*_]*\n?[ \t]*([^\n]+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_TIME = re.compile(r"(\d{1,2}):(\d{2})\s*([AaPp])\.?\s*[Mm]\.?")


def _answer_text(text: str) -> str:
    found = _ANSWER.findall(text)
    return found[-1].strip(" *_`.") if found else text


def parse_answer(text: str, answer_type: str) -> str | None:
    """The answer in `text`, normalised for its type, or None when there is none."""
    value = _answer_text(text)
    if answer_type == "number":
        nums = _NUMBER.findall(value.replace("$", ""))
        return nums[0 if value is not text else -1].replace(",", "") if nums else None
    if answer_type == "time":
        times = _TIME.findall(value)
        if not times:
            return None
        hour, minute, half = times[0 if value is not text else -1]
        return f"{int(hour)}:{minute} {half.upper()}M"
    if answer_type == "ordering":
        return re.sub(r"\s+", "", value).upper() or None if value is not text else None
    return value.strip().lower() or None


def is_correct(text: str, expected: str, answer_type: str, tolerance: float = 0.0) -> bool:
    got = parse_answer(text, answer_type)
    if got is None:
        return False
    if answer_type == "number":
        return abs(float(got) - float(expected.replace(",", ""))) <= tolerance + 1e-9
    want = parse_answer(f"Answer: {expected}", answer_type)
    return got == want
