"""Tuning tests. This folder is on sys.path (pytest's rootdir conftest rule), so planted_tune imports."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def planted_problem(tmp_path_factory):
    """(model, tokenizer, store, calib, heldout ids) of planted_tune.planted_setup, built once.
    Read-only: tests that change the model's weights work on a copy."""
    from planted_tune import planted_setup

    model, tokenizer, store, calib, heldout, _ = planted_setup(tmp_path_factory.mktemp("planted"))
    return model, tokenizer, store, calib, heldout
