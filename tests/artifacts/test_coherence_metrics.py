"""The coherence metrics against hand-computed values."""

import pytest

from calderalab.artifacts.coherence_metrics import (
    INVALID,
    char_script,
    foreign_script_share,
    repeated_ngram_ratio,
    scripts_of,
)


def test_char_script_names_the_writing_system_of_letters_only():
    assert char_script("a") == "LATIN" and char_script("É") == "LATIN"
    assert char_script("я") == "CYRILLIC" and char_script("中") == "CJK" and char_script("あ") == "HIRAGANA"
    assert char_script("\ufffd") == INVALID
    for neutral in ("7", " ", '"', ".", "\n", "€"):
        assert char_script(neutral) is None
    with pytest.raises(ValueError, match="one character"):
        char_script("ab")


def test_scripts_of_ignores_digits_and_punctuation():
    assert scripts_of("What is 2+2?") == {"LATIN"}
    assert scripts_of("Привет, world") == {"CYRILLIC", "LATIN"}
    assert scripts_of("12 + 3 = 15.") == frozenset()


def test_foreign_script_share_exact():
    # letters: h, i, 中, 文 -> 2 of 4 outside LATIN; the space, "!" and digits do not count
    assert foreign_script_share("hi 中文! 42", {"LATIN"}) == 2 / 4
    assert foreign_script_share("hello there", {"LATIN"}) == 0.0
    assert foreign_script_share("ab\ufffd", {"LATIN"}) == 1 / 3  # undecodable bytes always count
    assert foreign_script_share("ab\ufffd", {"LATIN", INVALID}) == 1 / 3
    assert foreign_script_share('"""!!', {"LATIN"}) == 0.0  # nothing script-bearing


def test_repeated_ngram_ratio_exact():
    # '"c"c"c"c': 4-grams '"c"c', 'c"c"', '"c"c', 'c"c"', '"c"c' -> 5 total, 2 distinct
    assert repeated_ngram_ratio('"c"c"c"c', 4) == pytest.approx(1 - 2 / 5)
    assert repeated_ngram_ratio("abcdefgh", 4) == 0.0  # every 4-gram distinct
    assert repeated_ngram_ratio("aaaa", 1) == pytest.approx(1 - 1 / 4)
    assert repeated_ngram_ratio([5, 6, 5, 6, 7], 2) == pytest.approx(1 - 3 / 4)  # token ids: (5,6) twice
    assert repeated_ngram_ratio("abc", 4) == 0.0  # shorter than n: no n-grams
    with pytest.raises(ValueError, match="n >= 1"):
        repeated_ngram_ratio("abc", 0)
