"""Probe rendering (pure strings), the answer-line detector and letter parsing."""

from __future__ import annotations

import re

import pytest

from calderalab.eval.probes import (
    execution_choice,
    execution_messages,
    has_complete_answer_line,
    parse_letter,
    understanding_choice,
    understanding_messages,
)
from calderalab.eval.types import Instance


def make_instance(**overrides) -> Instance:
    base = dict(
        family="discount_coupon", index=0, seed=0,
        question="A $20 shirt is 50% off, then a $-5 coupon... What is the final price?",
        answer="15", answer_type="number", tolerance=0.0, n_steps=2,
        plan_question="Which plan computes the final price?",
        plan_options=("Apply coupon then discount", "Apply discount then coupon", "Add both"),
        correct_option=1, answer_options=("15", "5", "10"), correct_answer_option=0,
    )
    base.update(overrides)
    return Instance(**base)


def test_execution_probe_asks_for_steps_and_an_answer_line():
    (msg,) = execution_messages(make_instance())
    assert msg["role"] == "user"
    assert "What is the final price?" in msg["content"]
    assert "step by step" in msg["content"] and "Answer: <answer>" in msg["content"]
    assert "15" not in msg["content"]  # the answer never leaks into the prompt


@pytest.mark.parametrize("answer_type, form", [("time", "<AM or PM>"), ("ordering", "<name><<name>"), ("number", "<number>")])
def test_execution_probe_states_the_answer_format(answer_type, form):
    (msg,) = execution_messages(make_instance(answer_type=answer_type))
    assert form in msg["content"]
    assert not re.search(r"Answer: \d", msg["content"])  # no sample value a model could copy


def test_understanding_probe_is_a_separate_lettered_question():
    inst = make_instance()
    (msg,) = understanding_messages(inst)
    assert "A) Apply coupon then discount\nB) Apply discount then coupon\nC) Add both" in msg["content"]
    assert "Which plan computes the final price?" in msg["content"]
    assert "(A, B, C)" in msg["content"] and "step by step" not in msg["content"]


def test_understanding_probe_needs_plan_options():
    with pytest.raises(ValueError, match="no plan options"):
        understanding_messages(make_instance(plan_options=()))


def test_choice_items_continue_after_the_answer_prefix():
    inst = make_instance()
    exe, und = execution_choice(inst), understanding_choice(inst)
    assert exe.continuations == (" 15", " 5", " 10") and exe.correct == 0
    assert und.continuations == (" A", " B", " C") and und.correct == 1
    assert exe.assistant_prefix == und.assistant_prefix == "Answer:"
    assert "step by step" not in exe.messages[0]["content"]
    with pytest.raises(ValueError, match="answer_options"):
        execution_choice(make_instance(answer_options=()))


@pytest.mark.parametrize(
    "text, done",
    [
        ("Step 1: 20/2 = 10.\nAnswer: 15\n", True),
        ("**Final Answer:** 4:15 PM\n", True),
        ("The answer is: D<C<B<A\n", True),
        ("Answer:\n15\n", True),
        ("Answer: 15", False),  # line not finished yet: the number may continue
        ("Answer:\n", False),
        ("Step 1: the answer depends on the coupon.\n", False),
    ],
)
def test_answer_line_detection(text, done):
    assert has_complete_answer_line(text) is done


@pytest.mark.parametrize(
    "text, letter",
    [("Answer: B", "B"), ("answer: (c)\n", "C"), ("B) Apply discount", "B"), ("**Answer:** A", "A"),
     ("Answer: E", None), ("I think plan two.", None), ("Answer:\nC", "C"),
     ("A) Step 1: add.\nB) Step 1: subtract.", None), ("Step 1: 25%.\nThe answer is A.\n\nB) Step 2", "A"),
     ("Answer: A\nWait, the answer is option C.", "C")],  # an echo of the options is no answer
)
def test_parse_letter(text, letter):
    assert parse_letter(text, n_options=4) == letter
