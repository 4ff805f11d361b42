"""Pure text metrics of the coherence check: script share and repeated n-grams (no torch).

The report's "gibberish" failure shows up in a compressed model's free text in two ways a
number can catch without a second model: the text leaves the prompt's writing system (a
switch to CJK, Cyrillic or undecodable bytes), or it loops (`"c"c"c"c`). Both are measured
here on plain strings so they can be checked against hand-computed values; the perplexity
side of the check needs the model and lives in artifacts.coherence.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence

INVALID = "INVALID"  # U+FFFD: bytes the tokenizer could not decode into text
UNKNOWN = "UNKNOWN"  # a letter without a Unicode name (unassigned code point)


def char_script(ch: str) -> str | None:
    """The writing system of one character, or None for script-neutral characters.

    Letters (Unicode category L*) map to the first word of their Unicode name: "a" -> "LATIN",
    "я" -> "CYRILLIC", "中" -> "CJK", "あ" -> "HIRAGANA". U+FFFD maps to INVALID. Digits,
    punctuation, spaces and symbols are shared by all scripts and map to None (not counted).
    """
    if len(ch) != 1:
        raise ValueError(f"char_script takes one character, got {ch!r}")
    if ch == "\ufffd":
        return INVALID
    if not unicodedata.category(ch).startswith("L"):
        return None
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else UNKNOWN


def scripts_of(text: str) -> frozenset[str]:
    """The set of scripts the letters of `text` are written in ({"LATIN"} for English)."""
    return frozenset(s for s in map(char_script, text) if s is not None)


def foreign_script_share(text: str, allowed: Iterable[str]) -> float:
    """Share of the script-bearing characters of `text` whose script is not in `allowed`.

    share = #{c : script(c) ∉ allowed} / #{c : script(c) is not None}; 0.0 when the text has
    no script-bearing character (an empty or all-punctuation text cannot switch script; the
    repetition metric catches a run of quotes). INVALID is never allowed: undecodable bytes always count.
    """
    allowed_set = set(allowed) - {INVALID}
    scripts = [s for s in map(char_script, text) if s is not None]
    if not scripts:
        return 0.0
    return sum(s not in allowed_set for s in scripts) / len(scripts)


def repeated_ngram_ratio(items: Sequence, n: int) -> float:
    """1 − distinct / total over the n-grams of `items` (a string's characters, or token ids).

    0 when no n-gram occurs twice; → 1 for a loop: `"c"c"c"c` (8 characters) has 5 character
    4-grams of which 2 are distinct, so 1 − 2/5 = 0.6. A sequence shorter than n has no
    n-grams and scores 0.0.
    """
    if n < 1:
        raise ValueError(f"need n >= 1 for n-grams, got n={n}")
    total = len(items) - n + 1
    if total <= 0:
        return 0.0
    distinct = {tuple(items[i : i + n]) for i in range(total)}
    return 1.0 - len(distinct) / total
