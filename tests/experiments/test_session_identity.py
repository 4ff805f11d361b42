"""The study's artifact store names its model the way `calderalab compress` does, so one store serves both."""

from __future__ import annotations

import dataclasses

from helpers_cli import calibration_text, compress_args, run_main, tiny_checkpoint
from helpers_experiments import small_config

from calderalab.artifacts import ArtifactStore
from calderalab.core import CompressionSpec
from calderalab.experiments import Session
from calderalab.models import model_identity
from calderalab.plans import uniform_plan


def test_study_and_compress_write_the_same_model_identity(tmp_path, capsys):
    model_dir = tiny_checkpoint(tmp_path)
    calib = calibration_text(tmp_path)
    config = small_config(str(tmp_path / "study"), str(calib), artifacts=str(tmp_path / "study-store"))
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, model=str(model_dir)))
    session = Session.open(config.run, config.compress, config.eval, "identity-test")
    session.compress(uniform_plan(session.n_layers, CompressionSpec("ldlq", bits=4)))

    code, _, err = run_main(compress_args(model_dir, calib, tmp_path / "cli-store"), capsys)
    assert code == 0, err
    expected = model_identity(str(model_dir))
    assert ArtifactStore(str(tmp_path / "study-store")).header().model["ref"] == expected
    assert ArtifactStore(str(tmp_path / "cli-store")).header().model["ref"] == expected
