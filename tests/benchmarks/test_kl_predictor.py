"""benchmarks/kl_predictor.py: the prediction is the KL plan's own (sensitivity · tr(ΔW H ΔWᵀ), summed over
the swapped modules), zero for the original weights, and within a small factor of the KL measured on a
tiny model through the same scoring path the benchmark uses."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture()
def kp(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("kl_predictor")


def test_prediction_matches_the_measured_kl_of_a_small_error(kp, tmp_path):
    from calderalab.calib.fisher import FisherConfig, output_sensitivity
    from calderalab.eval.fidelity import load_or_build_reference, measure_against
    from calderalab.models import module_shapes, swapped_weights, target_linear, tiny_model

    model, _ = tiny_model("llama", n_layers=2, seed=0)
    ids = torch.randint(1, 64, (8 * 32,), generator=torch.Generator().manual_seed(0))
    sens = output_sensitivity(model, ids.reshape(8, 32), FisherConfig(samples=8, batch_size=4))
    hessians = {}
    for layer in range(2):
        hessians[layer] = {}
        for (l, n), (_, d_in) in module_shapes(model).items():
            if l == layer:
                X = torch.randn(64, d_in, generator=torch.Generator().manual_seed(l))
                hessians[layer][n] = X.T @ X / 64
    original = {k: target_linear(model, *k).weight.detach().clone() for k in module_shapes(model)}
    assert kp.predicted(sens, hessians, model, original) == 0.0
    D = 0.01 * torch.randn(original[(1, "v")].shape, generator=torch.Generator().manual_seed(3))
    one = {(1, "v"): original[(1, "v")] + D}
    expected = sens[(1, "v")] * float(((D.double() @ hessians[1]["v"].double()) * D.double()).sum())
    assert kp.predicted(sens, hessians, model, one) == pytest.approx(expected, rel=1e-5)  # Ŵ = W + D in float32

    # with the model's own Hessians the prediction tracks the measured KL (tests/calib/test_calib_fisher.py
    # checks every module; here: the benchmark's measuring path)
    acc = {}
    lin = target_linear(model, 1, "v")
    handle = lin.register_forward_hook(lambda m, i, o: acc.setdefault("x", i[0].reshape(-1, i[0].shape[-1])))
    with torch.no_grad():
        model(ids.reshape(8, 32)[:, :32])
    handle.remove()
    H = acc["x"].T @ acc["x"] / acc["x"].shape[0]
    reference = load_or_build_reference(model, ids, 32, 32, tmp_path)
    with swapped_weights(model, one):
        measured = measure_against(model, reference, ids).kl_interval()[0]
    pred = kp.predicted(sens, {1: {"v": H}}, model, one)
    assert 0.3 < measured / pred < 3.0, (measured, pred)
