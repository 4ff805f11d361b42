"""`calderalab sensitivity` and the study's sensitivity stage are one pipeline: same settings, same profile."""

from __future__ import annotations

from pathlib import Path


def test_sensitivity_command_and_study_stage_give_the_same_profile(tiny, study_run):
    from calderalab.sensitivity import SensitivityProfile
    from calderalab.sensitivity.pipeline import CompressOnTheFly, run_sensitivity

    config, result = study_run
    from_study = SensitivityProfile.load(Path(config.run.out) / "profile.json")
    model, tokenizer = tiny
    # what `calderalab sensitivity` runs: each layer compressed here from the original model's Hessians,
    # where the study swaps in the uniform plan's stored artifacts of the same spec and calibration
    weights = CompressOnTheFly(config.compress.base, config.compress.calib)
    command = run_sensitivity(model, tokenizer, config.sensitivity, weights, model_ref=config.run.model)
    assert command.profile.rows == from_study.rows and command.profile.noise == from_study.noise
    assert command.zone == result.zone or result.zone_source == "depth fallback"
    shared = ("model", "n_samples", "threshold", "seed", "batch_size", "noise_batch_size", "max_new_tokens", "spec", "spec_key")
    assert {k: command.profile.settings[k] for k in shared} == {k: from_study.settings[k] for k in shared}
    assert from_study.settings["plan_hash"] and "calib" in command.profile.settings


def test_study_reuses_its_profile_only_for_the_same_settings(tiny, study_run, monkeypatch):
    import dataclasses

    import pytest

    from calderalab.experiments.session import Session
    from calderalab.experiments.study import profile_layers
    from calderalab.plans import uniform_plan
    from calderalab.sensitivity import pipeline

    config, _ = study_run
    session = Session.open(config.run, config.compress, config.eval, "study", model_and_tokenizer=tiny)
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
