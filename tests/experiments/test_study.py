"""The main job end to end on a tiny random model: report folder, tables, resume."""

from __future__ import annotations

import json
from pathlib import Path


def test_study_end_to_end_writes_report_folder(study_run):
    from calderalab.artifacts import ArtifactStore
    from calderalab.results import ResultsDB

    small_config, out = study_run
    folder = small_config.run.out
    text = out.paths["report"].read_text()
    assert (out.zone, out.zone_source) == ((3,), "profile")  # the planted critical layer, measured
    for heading in ("Critical zone", "Layer fidelity profile", "Critical layer details", "Ultra config", "Goodhart Gap (choice scoring",
                    "Per-test breakdown", "Paired comparison against Baseline", "Goodhart Gap (generation, canonical 3)",
                    "Chance and surface floors", "Difficulty ladder (ladder, choice scoring, N=18)"):
        assert heading in text, heading
    assert text.index("Critical zone") < text.index("Layer fidelity profile")  # the headline comes first
    assert "| Config | Protected | Understanding | Execution | Gaps |" in text
    assert "| Layer Group | Layers | Avg Fidelity | Avg Margin |" in text
    for label in ("Baseline", "3-bit uniform", "3-bit selective", "3-bit ultra"):
        assert f"| {label}" in text
    assert "| Steps k | Config | Understanding; chance, p | Execution; chance, p |" in text
    assert (out.paths["report"].parent / "ladder_choice_scoring_N_18.png").stat().st_size > 1000
    assert (out.paths["report"].parent / "fidelity.png").stat().st_size > 1000
    manifest = json.loads(out.paths["manifest"].read_text())
    assert manifest["config"]["compress"]["base"]["rank"] == 4 and "torch" in manifest["versions"]
    assert max(out.ultra_ranks.values()) > 4  # the zone layers got more rank than uniform
    with ResultsDB(small_config.run.db_path) as db:
        runs = db.list_runs("study")
    assert len(runs) == 12  # 4 configurations x (choice suite + ladder + generated canonical tests)
    # every run records its own pass and, when compressed, the sha256 of the store's manifest content
    assert sorted(r.record.suite for r in runs) == ["canonical"] * 4 + ["goodhart"] * 4 + ["ladder"] * 4
    manifest_hash = ArtifactStore(small_config.run.artifacts_url).manifest().content_hash()
    assert {r.record.artifacts_manifest_hash for r in runs if r.record.label != "Baseline"} == {manifest_hash}
    assert all(r.record.decoding["max_new_tokens"] == 8 and "parse_failures" in r.record.decoding for r in runs)
    # the same instances for every configuration: paired
    sizes = [r.n_instances for r in runs if r.record.scoring == "choice"]
    assert sorted(sizes) == [3] * 4 + [18] * 4  # the suite and the ladder, each the same for all 4 configs
    assert "Stage times" in out.summary and "ladder, choice scoring" in out.summary
    assert "Critical zone (measured): layers 3" in out.summary
    assert folder in str(out.paths["report"])


def test_study_rerun_resumes_without_compressing_or_evaluating(fragile_tiny, study_run, monkeypatch):
    from calderalab import executors
    from calderalab.experiments import study
    from calderalab.results import ResultsDB

    small_config, _ = study_run
    calls = {"decompose": 0, "evaluate": 0}
    real = executors.run_job

    def counting(job, threads):
        calls["decompose"] += 1
        return real(job, threads)

    def evaluator(*args):
        calls["evaluate"] += 1
        raise AssertionError("a rerun must reuse the stored runs")

    monkeypatch.setattr(executors, "run_job", counting)
    again = study(small_config, model_and_tokenizer=fragile_tiny, evaluator=evaluator)
    assert calls == {"decompose": 0, "evaluate": 0}
    assert "sensitivity" not in again.timings  # the saved profile was reused
    with ResultsDB(small_config.run.db_path) as db:
        assert len(db.list_runs("study")) == 12



def test_sensitivity_command_and_study_stage_give_the_same_profile(fragile_tiny, study_run):
    from calderalab.sensitivity import SensitivityProfile
    from calderalab.sensitivity.pipeline import CompressOnTheFly, run_sensitivity

    config, result = study_run
    from_study = SensitivityProfile.load(Path(config.run.out) / "profile.json")
    model, tokenizer = fragile_tiny
    # what `calderalab sensitivity` runs: each layer compressed here from the original model's Hessians,
    # where the study swaps in the uniform plan's stored artifacts of the same spec and calibration
    weights = CompressOnTheFly(config.compress.base, config.compress.calib)
    command = run_sensitivity(model, tokenizer, config.sensitivity, weights, model_ref=config.run.model)
    assert command.profile.rows == from_study.rows and command.profile.noise == from_study.noise
    assert command.zone == result.zone == (3,)
    shared = ("model", "n_samples", "threshold", "seed", "batch_size", "noise_batch_size", "max_new_tokens", "spec", "spec_key")
    assert {k: command.profile.settings[k] for k in shared} == {k: from_study.settings[k] for k in shared}
    assert from_study.settings["plan_hash"] and "calib" in command.profile.settings


def test_study_reuses_its_profile_only_for_the_same_settings(fragile_tiny, study_run, monkeypatch):
    import dataclasses

    import pytest

    from calderalab.experiments.session import Session
    from calderalab.experiments.study import profile_layers
    from calderalab.plans import uniform_plan
    from calderalab.sensitivity import pipeline

    config, _ = study_run
    session = Session.open(config.run, config.compress, config.eval, "study", model_and_tokenizer=fragile_tiny)
    plan = uniform_plan(session.n_layers, config.compress.spec())
    calls = []

    def measured_again(model, tokenizer, settings, *args, **kwargs):
        calls.append(settings)
        raise RuntimeError("measured again")

    monkeypatch.setattr(pipeline, "run_sensitivity", measured_again)
    assert len(profile_layers(session, plan, config).rows) == 4  # the saved profile, same settings
    other = dataclasses.replace(config, sensitivity=dataclasses.replace(config.sensitivity, n_samples=3))
    with pytest.raises(RuntimeError, match="measured again"):
        profile_layers(session, plan, other)
    assert calls == [other.sensitivity]


def test_study_budget_option_plans_from_the_profile_through_the_session(fragile_tiny, study_run, monkeypatch):
    import dataclasses

    import pytest

    from calderalab import executors
    from calderalab.budget import BudgetSettings
    from calderalab.errors import PlanError
    from calderalab.experiments import study
    from calderalab.experiments.session import Session
    from calderalab.experiments.study import _budget_plan, _budget_section
    from calderalab.sensitivity import SensitivityProfile

    config, _ = study_run
    session = Session.open(config.run, config.compress, config.eval, "study", model_and_tokenizer=fragile_tiny)
    profile = SensitivityProfile.load(Path(config.run.out) / "profile.json")
    settings = BudgetSettings(4.0, bits=(2, 3), ranks=(0, 4))
    chosen = _budget_plan(session, profile, settings)
    assert chosen.plan.preset == "budget" and chosen.bpw.bpw_fp16 <= 4.0
    assert all(session.store.has(l, n, s) for (l, n), s in chosen.plan.compressed())
    assert any(stage.startswith("compress budget candidate 2b-r0") for stage in session.timings)
    assert _budget_section(chosen, settings).title == "Budget plan"
    # an impossible target fails after the model is at hand and before anything is compressed
    monkeypatch.setattr(executors, "run_job", lambda job, threads: pytest.fail("compressed before checking the budget"))
    with pytest.raises(PlanError, match="below the cheapest plan"):
        study(dataclasses.replace(config, budget_bpw=1.0), model_and_tokenizer=fragile_tiny)
