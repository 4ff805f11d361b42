"""The Goodhart measurement can fail, and says so: planted backends wrong (or right) in a known way.

Each test runs the real runner (`evaluate_with`) and the real validity statistics on a backend
whose behaviour is planted (eval.planted), over >= 200 generated instances, and checks that the
numbers report exactly that behaviour: position and length scorers land at chance and are called
not informative, an oracle is at 100% in every scoring mode, raw and debiased letter shares are
what the planted rule implies.
"""

from __future__ import annotations

from collections import Counter

import pytest

from calderalab.eval import planted
from calderalab.eval.runner import EvalConfig, evaluate_with
from calderalab.eval.tasks import generate_instances, load_families
from calderalab.eval.validity import gap_measurable, informative_sentence, probe_validity, surface_heuristics


@pytest.fixture(scope="module")
def instances():
    out = generate_instances(load_families(), 10, seed=0)
    assert len(out) >= 200
    return out


def _run(backend, instances, scoring="choice", **config):
    run = evaluate_with(backend, instances, EvalConfig(scoring=scoring, **config))
    outcomes = run.outcomes()
    return outcomes, probe_validity(outcomes, "understanding"), probe_validity(outcomes, "execution")


def _correct_positions(instances):
    counts = Counter(i.correct_option for i in instances)
    return tuple(counts.get(j, 0) / len(instances) for j in range(4))


def test_first_letter_scorer_is_at_chance_and_not_informative(instances):
    outcomes, und, exe = _run(planted.position(0), instances)
    assert und.mode == "letters" and und.n == len(instances)
    # Debiasing: a constant letter preference cancels over the rotations, so the pick is a seeded draw.
    assert und.p_value > 0.05 and not und.informative
    assert abs(und.rate - und.chance) < 0.06
    assert und.raw_letter_shares[0] == 1.0  # the first-order pick is always A ...
    assert max(und.letter_shares) < 0.35  # ... the debiased pick lands on every letter
    # Without rotations the same scorer would score exactly the share of right plans at A:
    raw_right = sum(o.understanding_detail.raw_chosen == o.understanding_detail.correct for o in outcomes)
    assert raw_right == sum(i.correct_option == 0 for i in instances)
    # Execution: "the first answer option" is a surface rule; its rate is the floor, never above it.
    assert not exe.informative
    assert not gap_measurable(und, exe)
    assert "NOT measurable" in informative_sentence("planted", und, exe)


def test_oracle_is_right_everywhere_in_every_scoring_mode(instances):
    oracle = planted.oracle(instances)
    for scoring in ("choice", "cloze", "generate"):
        outcomes, und, exe = _run(oracle, instances, scoring=scoring)
        assert und.rate == 1.0 and exe.rate == 1.0, scoring
        assert und.informative and exe.informative and gap_measurable(und, exe)
        assert und.p_value < 1e-20
        assert all(o.verdict.value == "PASS" for o in outcomes)
    # An oracle's letter shares, raw and debiased, are where the right plans sit.
    _, und, _ = _run(oracle, instances)
    assert und.raw_letter_shares == und.letter_shares == _correct_positions(instances)


@pytest.mark.parametrize("backend", [planted.longest, planted.shortest], ids=["longest", "shortest"])
@pytest.mark.parametrize("scoring", ["choice", "cloze"])
def test_length_scorers_are_at_chance(instances, backend, scoring):
    _, und, exe = _run(backend(), instances, scoring=scoring)
    for v in (und, exe):
        assert abs(v.rate - v.chance) < 0.06, (v.probe, v.rate, v.chance)
        assert v.p_value > 0.01, (v.probe, v.p_value)
        assert not v.informative


def test_a_scorer_that_prefers_short_answers_does_not_win_execution(instances):
    # Every token equally likely: a summed log-likelihood always picks the shortest answer ...
    summed, _, exe_sum = _run(planted.per_token_constant(), instances, length_normalize=False)
    for o in summed:
        d = o.execution_detail
        assert d.lengths[d.chosen] == min(d.lengths)
    # ... per token every answer ties, the pick is a seeded draw, and execution sits at chance.
    _, _, exe = _run(planted.per_token_constant(), instances)
    assert exe.p_value > 0.05 and not exe.informative
    assert abs(exe.rate - exe.chance) < 0.06


def test_surface_heuristics_report_the_cue_a_biased_suite_carries(instances):
    # Plant the cue: make every right plan the longest option. The floor must expose it.
    import dataclasses

    from calderalab.eval.types import ChoiceDetail

    details = [ChoiceDetail("letters", 4, c, c, c, tuple(20 if j == c else 10 for j in range(4)))
               for c in (0, 1, 2, 3) * 50]
    rules = surface_heuristics(details)
    assert rules["longest option"] == 1.0 and rules["shortest option"] == 0.0
    assert rules["letter A"] == 0.25
    flat = [dataclasses.replace(d, lengths=(10, 10, 10, 10)) for d in details]
    assert surface_heuristics(flat)["longest option"] == pytest.approx(0.25)
    # The centroid cue: the right plan shares the most steps (a star of one-step changes around it).
    assert "most shared steps" not in rules  # details stored without overlaps
    star = [dataclasses.replace(d, overlap=tuple(6 if j == d.correct else 4 for j in range(4))) for d in flat]
    assert surface_heuristics(star)["most shared steps"] == 1.0
    factorial = [dataclasses.replace(d, overlap=(5, 5, 5, 5)) for d in flat]
    assert surface_heuristics(factorial)["most shared steps"] == pytest.approx(0.25)


def test_generated_letters_chance_is_the_best_constant_guess(instances):
    # A model that always writes "Answer: A" scores the share of right plans at A: never above
    # the best constant guess, which is the chance level of a generated letter.
    outcomes, und, exe = _run(planted.position(0), instances, scoring="generate")
    shares = _correct_positions(instances)
    assert und.mode == "generated" and und.chance == max(shares)
    assert und.chance_rule == f"constant guess '{'ABCD'[shares.index(max(shares))]}'"
    assert und.rate == shares[0] <= und.chance and not und.informative
    assert und.raw_letter_shares[0] == 1.0
    assert exe.mode == "generated answer" and exe.correct == 0 and not exe.informative
