"""End to end on the real SmolLM2: the seven canonical tests, choice scoring, stored and read back."""

import re

import pytest

pytestmark = pytest.mark.slow


def test_eval_job_canonical_choice_round_trip(tmp_path, smollm2):
    from calderalab.eval.suite import EvalSettings
    from calderalab.experiments.evaluation import EvalJob, run_eval_job
    from calderalab.report.tables import goodhart_table, per_test_grid
    from calderalab.results import ResultsDB

    db_path = tmp_path / "runs.sqlite"
    run_id, outcomes = run_eval_job(EvalJob("smollm2", EvalSettings(suite="canonical"), label="Baseline"), db_path,
                                   loaded=smollm2)
    assert outcomes.n == 7 and outcomes.n_probed == 7
    assert [o.family for o in outcomes.outcomes] == [
        "discount_coupon", "time_duration", "financial_compound", "recipe_scale", "unit_chain",
        "transitive_order", "task_schedule"]
    with ResultsDB(db_path) as db:
        run = db.get_run(run_id)
        back = db.run_outcomes(run_id)
        probes = db.outcomes(run_id)
    assert back.outcomes == outcomes.outcomes
    assert len(probes) == 14 and {p.scoring for p in probes} == {"choice"}
    assert re.fullmatch(r"[0-9a-f]{64}", run.record.model_fingerprint)
    assert run.record.decoding["scoring"] == "choice" and run.record.protected_label == "All"
    assert run.n_instances == 7 and run.record.label == "Baseline"
    # choice scoring stores each option's log-likelihood and always parses a letter / option
    assert all(p.parsed is not None for p in probes)
    assert goodhart_table([back]).startswith("| Config | Protected |")
    assert per_test_grid([back]).count("\n") == 8
