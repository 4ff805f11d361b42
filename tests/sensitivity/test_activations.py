"""Activation drift against exact values and planted truth on a tiny random model."""

import math
import re

import pytest
import torch

from calderalab import models
from calderalab.sensitivity.activations import (
    drift_profile,
    layer_outputs,
    token_drift,
    uniform_and_selective,
    without_layers,
)
from calderalab.sensitivity.measure import ProbeSample

N_LAYERS, CHANGED = 4, 2


def test_token_drift_exact():
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0], [2.0, 0.0]])
    b = torch.tensor([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0]])
    cos, rel = token_drift(a, b)
    torch.testing.assert_close(cos, torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(rel, torch.tensor([0.0, math.sqrt(2), 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(T, d\)"):
        token_drift(a, b[:2])


def test_without_layers_drops_only_protected_modules():
    w = {(0, "q"): torch.zeros(1), (1, "q"): torch.zeros(1), (1, "down"): torch.zeros(1)}
    assert set(without_layers(w, [1])) == {(0, "q")}
    assert set(without_layers(w, [])) == set(w)


@pytest.fixture(scope="module")
def tiny():
    model, _ = models.tiny_model("llama", n_layers=N_LAYERS, seed=0)
    samples = [ProbeSample((5, 9, 14, 30), (20, 7, 2)), ProbeSample((40, 41), (50, 51, 52, 53))]
    g = torch.Generator().manual_seed(1)
    changed = {(CHANGED, n): models.target_linear(model, CHANGED, n).weight * 1.3
               + 0.05 * torch.randn(models.target_linear(model, CHANGED, n).weight.shape, generator=g)
               for n in models.MODULE_NAMES}
    return model, samples, changed


def test_layer_outputs_are_the_decoder_layers_outputs(tiny):
    model, samples, _ = tiny
    ids = list(samples[0].prompt_ids) + list(samples[0].answer_ids)
    got = layer_outputs(model, ids)
    assert got.shape == (N_LAYERS, len(ids), 64)
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    for l in range(N_LAYERS - 1):  # transformers' last hidden state is after the final norm
        torch.testing.assert_close(got[l], hidden[l + 1][0])


def test_drift_is_zero_before_the_changed_layer_and_grows_from_it(tiny):
    model, samples, changed = tiny
    profile = drift_profile(model, samples, changed, "uniform")
    for row in profile.layers[:CHANGED]:
        assert (row.cos_answer, row.rel_answer, row.cos_all, row.rel_all) == pytest.approx((1, 0, 1, 0), abs=1e-12)
    for row in profile.layers[CHANGED:]:
        assert row.rel_answer > 1e-3 and row.rel_all > 1e-3 and row.cos_all < 1 - 1e-6


def test_protecting_the_changed_layer_leaves_no_drift(tiny):
    model, samples, changed = tiny
    uniform, selective = uniform_and_selective(model, samples, changed, protected=[CHANGED])
    assert selective.label == "selective" and selective.protected == (CHANGED,)
    assert all(row.rel_all == 0 and row.rel_answer == 0 for row in selective.layers)
    assert uniform.layers[CHANGED].rel_all > 0


def test_answer_positions_are_those_that_predict_the_answer(tiny):
    model, samples, changed = tiny
    profile = drift_profile(model, samples, changed, "uniform")
    rel_answer, rel_all = [], []
    for s in samples:  # reference: per token, by hand
        ids = list(s.prompt_ids) + list(s.answer_ids)
        h_o = layer_outputs(model, ids)[N_LAYERS - 1].double()
        with models.swapped_weights(model, changed):
            h_c = layer_outputs(model, ids)[N_LAYERS - 1].double()
        rel = [float((h_c[t] - h_o[t]).norm() / h_o[t].norm()) for t in range(len(ids))]
        p, a = len(s.prompt_ids), len(s.answer_ids)
        rel_answer += rel[p - 1 : p + a - 1]
        rel_all += rel
    assert profile.layers[-1].rel_answer == pytest.approx(sum(rel_answer) / len(rel_answer), rel=1e-9)
    assert profile.layers[-1].rel_all == pytest.approx(sum(rel_all) / len(rel_all), rel=1e-9)
    assert len(rel_answer) == 3 + 4 and len(rel_all) == 7 + 6


def test_activations_command_on_a_stored_compression(tiny_compressed, tmp_path):
    """Through the CLI on a real (tiny) store: protecting every layer leaves exactly zero drift."""
    import json

    from typer.testing import CliRunner

    from calderalab.cli import app

    model_dir, _, store = tiny_compressed
    out = tmp_path / "act"
    res = CliRunner().invoke(app, ["activations", str(model_dir), "--artifacts", str(store), "--protect", "0-2",
                                   "--samples", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "uniform rel (answer)" in res.output and "selective cos (all)" in res.output
    saved = json.loads((out / "drift.json").read_text())
    uniform, selective = saved["profiles"]
    assert selective["protected"] == [0, 1, 2] and uniform["n_samples"] == 2
    assert all(row["rel_all"] == 0 and row["cos_answer"] == pytest.approx(1, abs=1e-12) for row in selective["layers"])
    assert all(row["rel_all"] > 0 for row in uniform["layers"])  # every layer of the store is compressed
    assert (out / "drift.png").stat().st_size > 0 and len(re.findall(r"^\| \d", (out / "drift.md").read_text(), re.M)) == 3


def test_drift_table_rows():
    from calderalab.report.activation_report import drift_table
    from calderalab.sensitivity.activations import DriftProfile, LayerDrift

    p = DriftProfile("uniform", (), 1, (LayerDrift(0, 0.99, 0.125, 0.98, 0.25),))
    assert drift_table([p]).splitlines()[2] == "| 0 | 0.1250 | 0.2500 | 0.9900 | 0.9800 |"


def test_activations_command_refuses_bad_options_before_the_weights_load(tiny_compressed, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from calderalab.cli import app

    def load_model(*args, **kwargs):
        raise AssertionError("weights were loaded before the bad option was refused")

    monkeypatch.setattr(models, "load_model", load_model)
    model_dir, _, store = tiny_compressed
    args = ["activations", str(model_dir), "--artifacts", str(store), "--out", str(tmp_path / "o")]
    res = CliRunner().invoke(app, [*args, "--protect", "7"])
    assert res.exit_code != 0 and "layer 7 out of range" in str(res.exception)
    res = CliRunner().invoke(app, [*args, "--samples", "0"])
    assert res.exit_code != 0 and "n_samples >= 1" in str(res.exception)
