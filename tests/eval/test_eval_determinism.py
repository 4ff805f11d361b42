"""Determinism: the same evaluation run twice stores identical outcomes (raw outputs included)."""

from __future__ import annotations

import pytest

from calderalab.eval.runner import EvalConfig
from calderalab.eval.suite import EvalSettings
from calderalab.experiments.evaluation import EvalJob, run_eval_job
from calderalab.results import ResultsDB


@pytest.mark.parametrize("scoring", ["choice", "cloze", "generate"])
def test_same_run_twice_gives_identical_outcomes(tok, random_lm, tmp_path, scoring):
    job = EvalJob("tiny-random-llama", EvalSettings(suite="canonical", decoding=EvalConfig(scoring=scoring, batch_size=3)))
    db = tmp_path / "runs.sqlite"
    first, _ = run_eval_job(job, db, loaded=(random_lm, tok))
    second, _ = run_eval_job(job, db, loaded=(random_lm, tok))
    with ResultsDB(db) as results:
        a, b = results.outcomes(first), results.outcomes(second)
        assert results.get_run(first).outcomes_hash == results.get_run(second).outcomes_hash
    assert len(a) == len(b) > 0
    assert [(r.instance_uid, r.probe, r.raw_output, r.parsed, r.correct, r.detail) for r in a] == [
        (r.instance_uid, r.probe, r.raw_output, r.parsed, r.correct, r.detail) for r in b
    ]
