"""Fixtures for the experiment tests: a tiny random Llama with its byte tokenizer, small settings,
and one study run shared by the module (the study is the expensive part)."""

from __future__ import annotations

import pytest

from helpers_experiments import small_config


@pytest.fixture(scope="module")
def tiny():
    from calderalab.models import tiny_model

    return tiny_model("llama", n_layers=4)


@pytest.fixture(scope="module")
def study_run(tiny, shared_data, tmp_path_factory):
    from calderalab.experiments import study

    config = small_config(str(tmp_path_factory.mktemp("study")), str(shared_data / "wikitext-2" / "valid.txt"))
    return config, study(config, model_and_tokenizer=tiny)
