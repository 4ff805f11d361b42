"""Fixtures for the experiment tests: a tiny random Llama with its byte tokenizer, small settings,
and one study run shared by the module (the study is the expensive part) on a tiny model with a
planted critical layer."""

from __future__ import annotations

import pytest

from helpers_experiments import small_config


@pytest.fixture(scope="module")
def tiny():
    from calderalab.models import tiny_model

    return tiny_model("llama", n_layers=4)


@pytest.fixture(scope="module")
def fragile_tiny():
    """The tiny Llama with a planted critical zone: layers 0-2 write nothing to the residual stream
    (zero output projections, which compress exactly), layer 3's output projections are 3x, so
    compressing layer 3 alone changes the answers and compressing any other layer changes nothing."""
    import torch

    from calderalab.models import tiny_model

    model, tokenizer = tiny_model("llama", n_layers=4)
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            for weight in (layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight):
                weight.mul_(3.0 if i == 3 else 0.0)
    return model, tokenizer


@pytest.fixture(scope="module")
def study_run(fragile_tiny, shared_data, tmp_path_factory):
    from calderalab.experiments import study

    config = small_config(str(tmp_path_factory.mktemp("study")), str(shared_data / "wikitext-2" / "valid.txt"))
    return config, study(config, model_and_tokenizer=fragile_tiny)
