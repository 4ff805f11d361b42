"""Shared fixtures. The reference data lives in ../shared/data beside the checkout; never copied in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    env = os.environ.get("CALDERALAB_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.fail(f"reference data not found at {path}: check out the repo beside ../shared")
    return path


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2-135M-Instruct, loaded once per test session (de-quantised copy is cached)."""
    from calderalab.models import load_model

    return load_model("smollm2")


@pytest.fixture(scope="session")
def tiny_compressed(tmp_path_factory):
    """(model dir, calibration text, store): a tiny 3-layer Llama saved to disk and its 4-bit LDLQ
    artifact store, made once per session by `calderalab compress` (tests/helpers_cli.py). Read-only:
    copy the store before damaging it."""
    from helpers_cli import calibration_text, compress_args, tiny_checkpoint
    from typer.testing import CliRunner

    from calderalab.cli import app

    root = tmp_path_factory.mktemp("tiny-compressed")
    model, calib = tiny_checkpoint(root), calibration_text(root)
    store = root / "store"
    result = CliRunner().invoke(app, compress_args(model, calib, store))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return model, calib, store


@pytest.fixture(scope="session")
def local_s3(tmp_path_factory):
    """A real local S3 server with authentication on (moto in its own process), an admin and a
    read-only user, and AWS config/credentials files for them (tests/helpers_s3.py)."""
    from helpers_s3 import local_s3

    with local_s3(tmp_path_factory.mktemp("aws")) as server:
        yield server


@pytest.fixture
def aws_env(local_s3, monkeypatch):
    """This process's environment as a user's shell pointed at `local_s3` by the AWS files alone
    (no AWS_* keys, no endpoint variable); s3fs's instance cache cleared so clients see it."""
    import s3fs
    from helpers_s3 import AWS_VARIABLES

    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in local_s3.env().items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    yield local_s3
    s3fs.S3FileSystem.clear_instance_cache()
