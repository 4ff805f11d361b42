"""The main job end to end on a tiny random model: report folder, tables, resume."""

from __future__ import annotations

import json



def test_study_end_to_end_writes_report_folder(study_run):
    from calderalab.results import ResultsDB

    small_config, out = study_run
    folder = small_config.run.out
    text = out.paths["report"].read_text()
    zone_heading = "Critical layer details" if out.zone_source == "profile" else "Protected by depth (control)"
    for heading in ("Critical zone", "Layer fidelity profile", zone_heading, "Ultra config", "Goodhart Gap (choice scoring",
                    "Per-test breakdown", "Paired comparison against Baseline", "Goodhart Gap (generation, canonical 3)",
                    "Chance and surface floors", "Difficulty ladder (ladder, choice scoring, N=18)"):
        assert heading in text, heading
    assert text.index("Critical zone") < text.index("Layer fidelity profile")  # the headline comes first
    assert "| Config | Protected | Understanding | Execution | Gaps |" in text
    assert "| Layer Group | Layers | Avg Fidelity | Avg Margin |" in text
    control = "selective" if out.zone_source == "profile" else "depth control"
    for label in ("Baseline", "3-bit uniform", f"3-bit {control}", "3-bit ultra"):
        assert f"| {label}" in text
    assert "| Steps k | Config | Understanding; chance, p | Execution; chance, p |" in text
    assert (out.paths["report"].parent / "ladder_choice_scoring_N_18.png").stat().st_size > 1000
    assert (out.paths["report"].parent / "fidelity.png").stat().st_size > 1000
    manifest = json.loads(out.paths["manifest"].read_text())
    assert manifest["config"]["compress"]["base"]["rank"] == 4 and "torch" in manifest["versions"]
    assert out.zone and all(0 <= l < 4 for l in out.zone)
    assert max(out.ultra_ranks.values()) > 4  # the zone layers got more rank than uniform
    with ResultsDB(small_config.run.db_path) as db:
        runs = db.list_runs("study")
    assert len(runs) == 12  # 4 configurations x (choice suite + ladder + generated canonical tests)
    # the same instances for every configuration: paired
    sizes = [r.n_instances for r in runs if r.record.scoring == "choice"]
    assert sorted(sizes) == [3] * 4 + [18] * 4  # the suite and the ladder, each the same for all 4 configs
    assert "Stage times" in out.summary and "ladder, choice scoring" in out.summary
    assert ("Critical zone (measured)" in out.summary) == (out.zone_source == "profile")
    assert folder in str(out.paths["report"])


def test_study_rerun_resumes_without_compressing_or_evaluating(tiny, study_run, monkeypatch):
    from calderalab import executors
    from calderalab.experiments import study
    from calderalab.results import ResultsDB

    small_config, _ = study_run
    calls = {"decompose": 0, "evaluate": 0}
    real = executors.run_job

    def counting(job):
        calls["decompose"] += 1
        return real(job)

    def evaluator(*args):
        calls["evaluate"] += 1
        raise AssertionError("a rerun must reuse the stored runs")

    monkeypatch.setattr(executors, "run_job", counting)
    again = study(small_config, model_and_tokenizer=tiny, evaluator=evaluator)
    assert calls == {"decompose": 0, "evaluate": 0}
    assert "sensitivity" not in again.timings  # the saved profile was reused
    with ResultsDB(small_config.run.db_path) as db:
        assert len(db.list_runs("study")) == 12
