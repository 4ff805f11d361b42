"""Answer parsing: a table of realistic model outputs per answer type, tricky cases, and failures."""

import pytest

from calderalab.eval.parse import is_correct, parse, parse_answer

# (model output, answer type, canonical parsed value or None for a parse failure, tagged)
ROWS = [
    # ---- numbers
    ("Answer: 15", "number", "15", True),
    ("The final price is $15.00.\nAnswer: $15", "number", "15", True),
    ("**Answer:** 1,168", "number", "1168", True),
    ("Final answer: 6.30 km", "number", "6.3", True),
    ("Step 1: 40 * 0.75 = 30\nStep 2: 30 - 15 = 15\nAnswer: 15. Step 2: 20", "number", "15", True),
    ("Answer: 20\nWait, let me recheck.\nAnswer: 15", "number", "15", True),
    ("So you pay 15 dollars.", "number", "15", False),
    ("First 40 - 10 = 30, then 30 - 15 = 15", "number", "15", False),
    ("\\boxed{1168}", "number", "1168", True),
    ("The total is \\boxed{\\frac{3}{4}}", "number", "0.75", True),
    ("Thus \\boxed{3/4} cup", "number", "0.75", True),
    ("#### 1168", "number", "1168", True),
    ("Answer: 1 1/2 cups", "number", "1.5", True),
    ("Answer: 2/3", "number", "2/3", True),
    ("Answer: -5", "number", "-5", True),
    ("Answer: −5", "number", "-5", True),
    ("Answer: 25%", "number", "25", True),
    ("Answer: €1,080.50", "number", "1080.5", True),
    ("The answer is 3.", "number", "3", True),
    ("answer = 42", "number", "42", True),
    ("Answer:\n\n  6.3", "number", "6.3", True),
    ("I think it is 0.5 or maybe .75", "number", "0.75", False),
    ("Answer: 1,000,000", "number", "1000000", True),
    ("Answer: 15 (after the 25% discount)", "number", "15", True),
    ("Answer: I am not sure.", "number", None, True),
    ("I cannot solve this.", "number", None, False),
    ("", "number", None, False),
    ("Answer: 3/0", "number", None, True),
    # ---- times
    ("Answer: 4:15 PM", "time", "4:15 PM", True),
    ("The discussion ends at 4:15pm.", "time", "4:15 PM", False),
    ("It ends at 4.15 p.m.", "time", "4:15 PM", False),
    ("Final answer: 16:15", "time", "4:15 PM", True),
    ("Answer: 9:30 AM", "time", "9:30 AM", True),
    ("Answer: 9:30 a.m.", "time", "9:30 AM", True),
    ("Answer: 4 PM", "time", "4:00 PM", True),
    ("Answer: noon", "time", "12:00 PM", True),
    ("Answer: 12 noon", "time", "12:00 PM", True),
    ("The shift ends at midnight.", "time", "12:00 AM", False),
    ("Answer: 00:30", "time", "12:30 AM", True),
    ("It starts at 1:30 PM and lasts 2:45, so it ends at 4:15 PM.", "time", "4:15 PM", False),
    ("Answer: 2:45", "time", "2:45", True),
    ("Answer: 4:15 PM\nActually the movie ends at 3:15 PM.", "time", "4:15 PM", True),
    ("Answer: 4:15 PM. Step 3: 5:00 PM", "time", "4:15 PM", True),
    ("**Answer:** 10:45 AM", "time", "10:45 AM", True),
    ("Answer: 25:00", "time", None, True),
    ("Answer: soon", "time", None, True),
    ("No idea what time.", "time", None, False),
    # ---- orderings
    ("Answer: D<C<B<A", "ordering", "D<C<B<A", True),
    ("Answer: D < C < B < A", "ordering", "D<C<B<A", True),
    ("Answer: A > B > C > D", "ordering", "D<C<B<A", True),
    ("Answer: D, C, B, A", "ordering", "D<C<B<A", True),
    ("Answer: D, C, B and A", "ordering", "D<C<B<A", True),
    ("D is the shortest, then C, then B, then A.", "ordering", "D<C<B<A", False),
    ("A is the tallest, then B, then C, then D.", "ordering", "D<C<B<A", False),
    ("Since B<A and C<B and D<C:\nAnswer: D<C<B<A", "ordering", "D<C<B<A", True),
    ("From the facts, B < A and C < B, so D < C < B < A", "ordering", "D<C<B<A", False),
    ("Answer: Cara<Ava<Ben<Dev", "ordering", "Cara<Ava<Ben<Dev", True),
    ("Answer: A < B > C", "ordering", None, True),
    ("Answer: unknown", "ordering", None, True),
    # ---- letters
    ("B", "letter", "B", False),
    ("(B)", "letter", "B", False),
    ("B)", "letter", "B", False),
    ("Option B", "letter", "B", False),
    ("The answer is B.", "letter", "B", True),
    ("Answer: (C) because it adds the break.", "letter", "C", True),
    ("**Answer:** D", "letter", "D", True),
    ("I would choose option c.", "letter", "C", False),
    ("C. Add the break first", "letter", "C", False),
    ("Plan A looks plausible but Option B is correct.", "letter", "B", False),
    ("Answer: A\nAnswer: B", "letter", "B", True),
    ("**B**", "letter", "B", False),
    ("Answer: I think B is right.", "letter", "B", True),
    ("Answer: A good plan is C.", "letter", "C", True),
    ("Answer: A", "letter", "A", True),
    ("Answer: none of them", "letter", None, True),
    ("All plans look wrong to me.", "letter", None, False),
]


@pytest.mark.parametrize("text, answer_type, value, tagged", ROWS)
def test_parse_table(text, answer_type, value, tagged):
    result = parse(text, answer_type)
    assert result.value == value, result
    assert parse_answer(text, answer_type) == value
    if value is not None or text:
        assert result.tagged is tagged
    assert (result.failure is None) == (value is not None)


def test_table_is_wide():
    assert len(ROWS) >= 60
    assert {t for _, t, _, _ in ROWS} == {"number", "time", "ordering", "letter"}


@pytest.mark.parametrize(
    "text, expected, answer_type, tolerance, correct",
    [
        ("Answer: 6.30", "6.3", "number", 0.0, True),
        ("Answer: 6.29", "6.3", "number", 0.0, False),
        ("Answer: 6.29", "6.3", "number", 0.01, True),
        ("Answer: 6.28", "6.3", "number", 0.01, False),
        ("Answer: 0.3", "0.3", "number", 0.0, True),  # no float surprises: 0.1 + 0.2 style
        ("Answer: 1,168", "1168", "number", 0.0, True),
        ("Answer: 1080", "1168", "number", 0.0, False),
        ("Answer: $15.", "15", "number", 0.0, True),
        ("Answer: 15 dollars", "15", "number", 0.0, True),
        ("Answer: 4/3", "1.33", "number", 0.01, True),
        ("Answer: 4/3", "1.33", "number", 0.0, False),
        ("Answer: 4:15 PM", "4:15 PM", "time", 0.0, True),
        ("Answer: 16:15", "4:15 PM", "time", 0.0, True),
        ("Answer: 4:15", "4:15 PM", "time", 0.0, True),  # documented 12-h leniency without AM/PM
        ("Answer: 4:15 AM", "4:15 PM", "time", 0.0, False),
        ("Answer: 2:45", "4:15 PM", "time", 0.0, False),
        ("Answer: A > B > C > D", "D<C<B<A", "ordering", 0.0, True),
        ("Answer: A<B<C<D", "D<C<B<A", "ordering", 0.0, False),
        ("The order is D, C, B, A.", "D<C<B<A", "ordering", 0.0, True),
        ("Shortest is Cara, then Ava, then Ben, and Dev is the oldest.", "Cara<Ava<Ben<Dev", "ordering", 0.0, True),
        ("The answer is B.", "B", "letter", 0.0, True),
        ("The answer is B.", "C", "letter", 0.0, False),
        ("no answer", "15", "number", 0.0, False),
    ],
)
def test_is_correct(text, expected, answer_type, tolerance, correct):
    assert is_correct(text, expected, answer_type, tolerance) is correct


def test_failures_are_reported_separately_from_wrong_answers():
    assert parse("Answer: n/a", "number").failure.startswith("tagged answer unparseable")
    assert parse("no digits here", "number").failure == "no number found in the output"
    assert parse("  ", "time").failure == "empty output"
    wrong = parse("Answer: 20", "number")
    assert wrong.failure is None and wrong.value == "20"


def test_unknown_answer_type_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown answer_type 'money'"):
        parse("Answer: 5", "money")
