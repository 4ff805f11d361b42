"""evaluate() end to end on tiny planted models: scoring, verdicts, parse failures, execution-only suites."""

from __future__ import annotations

import json

import pytest
from tiny_lm import chain, scripted_llama
from test_probes import make_instance

from calderalab.eval.runner import EvalConfig, evaluate
from calderalab.eval.types import Verdict


def suite():
    return [
        make_instance(index=0, answer="15", answer_options=("5", "15"), correct_answer_option=1),
        make_instance(index=1, answer="16"),
        make_instance(family="gsm8k", index=2, answer="15", plan_options=(), answer_options=()),
    ]


def test_generation_scoring_verdicts_and_parse_failures(tok):
    model = scripted_llama(tok, chain("Answer: 15\n"))  # every reply is "Answer: 15"
    calls = []
    run = evaluate(model, tok, suite(), scoring="generate", batch_size=2, max_new_tokens=32,
                   progress=lambda d, t: calls.append((d, t)))
    exe = {r.instance_uid: r for r in run.results if r.probe == "execution"}
    assert [exe[i.uid].correct for i in suite()] == [True, False, True]
    assert all(r.parsed == "15" and r.raw_output == "Answer: 15\n" for r in exe.values())
    # Understanding replies name no letter: parse failures, counted apart from wrong answers.
    assert run.parse_failures == {"execution": 0, "understanding": 2}
    assert list(run.verdicts.values()) == [Verdict.LUCKY, Verdict.FAIL, None]
    assert run.truncated_share == 0.0 and run.generated_tokens == 5 * 11
    assert calls[-1] == (5, 5)
    s = run.summary()
    assert (s.n, s.n_probed, s.executed, s.lucky, s.conditional_gap_rate) == (3, 2, 2, 1, None)


def test_truncation_is_reported(tok):
    run = evaluate(scripted_llama(tok, chain("Thinkg")), tok, suite()[:1], max_new_tokens=8,
                   config=EvalConfig(scoring="generate", understanding_max_new_tokens=4))
    assert run.truncated == {"execution": 1, "understanding": 1} and run.truncated_share == 1.0
    assert run.parse_failures == {"execution": 1, "understanding": 1}


def test_choice_scoring_debiases_a_planted_letter(tok):
    # After the pre-filled "Answer:" the model continues " B" whatever the options say. The raw
    # (rotation-0) pick is B, right where the gold plan sits at B; the debiased pick sums B's score
    # over every rotation, so all options tie and the pick is a seeded draw: not a fixed "B".
    # Execution: the model has no idea of either answer; summed, the shorter " 5" wins (one unlikely
    # token instead of two), per token (the default) " 15" does: the normalisation decides.
    model = scripted_llama(tok, chain("Answer: B\n"))
    run = evaluate(model, tok, suite()[:2], scoring="choice", batch_size=3)
    und = [r for r in run.results if r.probe == "understanding"]
    assert [r.detail.raw_chosen for r in und] == [1, 1]
    assert all(len(r.detail.rotations) == r.detail.n_options for r in und)
    sums = und[0].detail.scores
    assert max(sums) - min(sums) < 1e-4  # a constant letter preference cancels over the rotations
    first_exec = run.result(suite()[0].uid, "execution")
    assert first_exec.parsed == "15" and first_exec.correct
    assert len(json.loads(first_exec.raw_output)) == 2
    assert first_exec.detail.mode == "answers" and first_exec.detail.chosen == 1
    summed = evaluate(model, tok, suite()[:2], config=EvalConfig(scoring="choice", length_normalize=False))
    assert summed.result(suite()[0].uid, "execution").parsed == "5"
    assert run.truncated_share == 0.0 and run.generated_tokens == 0


def test_choice_needs_answer_options(tok, random_lm):
    with pytest.raises(ValueError, match="answer_options"):
        evaluate(random_lm, tok, suite(), scoring="choice")


def test_batch_size_does_not_change_results(tok, random_lm):
    short = EvalConfig(scoring="generate", max_new_tokens=5, understanding_max_new_tokens=3)
    a = evaluate(random_lm, tok, suite(), batch_size=1, config=short)
    b = evaluate(random_lm, tok, suite(), batch_size=4, config=short)
    assert a.results == b.results
    c = evaluate(random_lm, tok, suite()[:2], scoring="choice", batch_size=1)
    d = evaluate(random_lm, tok, suite()[:2], scoring="choice", batch_size=5)
    assert [r.parsed for r in c.results] == [r.parsed for r in d.results]


def test_bad_settings_and_inputs(tok, random_lm):
    with pytest.raises(ValueError, match="scoring"):
        EvalConfig(scoring="vote")
    with pytest.raises(ValueError, match="token caps"):
        EvalConfig(understanding_max_new_tokens=0)
    with pytest.raises(ValueError, match="no instances"):
        evaluate(random_lm, tok, [])
    with pytest.raises(ValueError, match="duplicate"):
        evaluate(random_lm, tok, suite()[:1] * 2)
