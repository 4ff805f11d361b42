"""Step overlap of plan options (the centroid cue) and how ChoiceDetail stores it."""

import itertools
import json
import random

import pytest

from calderalab.eval.scoring import continuation_detail, generated_detail, letters_detail, plan_steps, step_overlap
from calderalab.eval.types import ChoiceDetail


def _plan(*steps: str) -> str:
    return " ".join(f"Step {i}: {s}." for i, s in enumerate(steps, 1))


def _reference_overlap(step_lists):
    """Σ over the other options of shared (position, text) pairs, by brute force over all pairs."""
    shared = [0] * len(step_lists)
    for i, j in itertools.permutations(range(len(step_lists)), 2):
        shared[i] += len({(p, s) for p, s in enumerate(step_lists[i])} & {(p, s) for p, s in enumerate(step_lists[j])})
    return tuple(shared)


def test_plan_steps_splits_on_the_step_markers():
    assert plan_steps(_plan("Add 3 boxes", "Halve the count")) == ("Add 3 boxes.", "Halve the count.")
    assert plan_steps("15") == () and plan_steps("") == ()
    assert len(plan_steps(_plan(*"abcdefghijkl"))) == 12  # "Step 10:" and beyond


def test_the_gold_plan_of_a_star_is_the_centroid():
    gold = _plan("a", "b", "c")
    star = [gold, _plan("X", "b", "c"), _plan("a", "Y", "c"), _plan("a", "b", "Z")]
    assert step_overlap(star) == (6, 4, 4, 4)  # gold shares 2 steps with each of 3; each arm 2 + 1 + 1


def test_a_two_by_two_factorial_has_no_centroid():
    options = [_plan("a", "b", "c"), _plan("A", "b", "c"), _plan("a", "b", "C"), _plan("A", "b", "C")]
    assert step_overlap(options) == (5, 5, 5, 5)
    same_step = [_plan("a", "b"), _plan("a", "X"), _plan("a", "Y")]  # every arm changes the same step
    assert step_overlap(same_step) == (2, 2, 2)


def test_step_overlap_matches_a_brute_force_reference():
    rng = random.Random(0)
    for _ in range(200):
        n_steps, k = rng.randint(1, 6), rng.randint(2, 4)
        step_lists = [[rng.choice("xyz") for _ in range(n_steps)] for _ in range(k)]
        plans = [_plan(*steps) for steps in step_lists]
        assert step_overlap(plans) == _reference_overlap([[s + "." for s in steps] for steps in step_lists])
    assert step_overlap([" 15", " 12", " 8"]) == (0, 0, 0)  # answers have no steps


def test_every_detail_builder_carries_the_overlap():
    rotations = [[-1.0, -2.0], [-2.0, -1.0]]
    assert letters_detail(rotations, 0, [5, 6], "k", overlap=(1, 1)).overlap == (1, 1)
    assert continuation_detail("cloze", [-1.0, -2.0], [1, 1], 0, [5, 6], "k", True, overlap=(2, 0)).overlap == (2, 0)
    assert generated_detail(1, 0, [5, 6], (0, 2)).overlap == (0, 2)
    assert letters_detail(rotations, 0, [5, 6], "k").overlap == ()


def test_choice_detail_round_trips_the_overlap_and_loads_old_rows():
    detail = ChoiceDetail("letters", 3, 1, 2, 0, (10, 11, 12), (-1.0, -2.0, -3.0), overlap=(4, 4, 4))
    assert ChoiceDetail.from_dict(json.loads(json.dumps(detail.to_dict()))) == detail
    old = detail.to_dict()
    del old["overlap"]  # a row stored before overlaps were kept
    assert ChoiceDetail.from_dict(old).overlap == ()
    with pytest.raises(ValueError, match="overlap needs one count per option"):
        ChoiceDetail("letters", 3, 1, 2, 0, (10, 11, 12), overlap=(4, 4))
