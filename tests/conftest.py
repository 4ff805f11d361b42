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
