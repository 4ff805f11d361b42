"""apply_artifacts / assemble_weights: protect keeps originals bit-identical, fingerprints are
checked before any swap, missing modules are named, plans pick specs."""

from __future__ import annotations

import pytest
import torch

from calderalab import core, plans
from calderalab.artifacts import ArtifactStore, apply_artifacts, assemble_weights, weight_fingerprint
from calderalab.errors import ArtifactError
from helpers_artifacts import compress_into, snapshot, spec
from calderalab.models.tiny import tiny_model


@pytest.fixture
def store_and_model(tmp_path):
    model = tiny_model("llama", n_layers=4, seed=0)[0]
    store = ArtifactStore(str(tmp_path / "store"))
    compress_into(store, model, spec())
    return store, model


def test_apply_with_protect_keeps_those_layers_bit_identical(store_and_model):
    store, model = store_and_model
    before = snapshot(model)
    out = apply_artifacts(model, store, protect=(1, 3))
    assert out is model
    after = snapshot(model)
    for (layer, name), W in before.items():
        if layer in (1, 3):
            assert torch.equal(after[(layer, name)], W), (layer, name)
        else:
            assert not torch.equal(after[(layer, name)], W), (layer, name)
            assert torch.equal(after[(layer, name)], store.load(layer, name, spec()).reconstruct().to(W.dtype))
    record = model.calderalab_applied
    assert record.protected_layers == (1, 3) and record.n_modules == 2 * 7
    assert {l for l, _, _ in record.applied} == {0, 2}


def test_one_store_serves_every_protection_set(store_and_model):
    store, model = store_and_model
    original = snapshot(model)
    a = assemble_weights(store, model, protect=(0,))
    b = assemble_weights(store, model, protect=(2, 3))
    assert set(a) == {(l, n) for l in (1, 2, 3) for n in core.MODULE_NAMES}
    assert set(b) == {(l, n) for l in (0, 1) for n in core.MODULE_NAMES}
    assert torch.equal(a[(1, "q")], b[(1, "q")])
    assert snapshot(model).keys() == original.keys()
    assert all(torch.equal(snapshot(model)[k], original[k]) for k in original)  # assembling swaps nothing


def test_mismatched_model_refused_naming_first_module_and_fingerprints(store_and_model):
    store, _ = store_and_model
    other = tiny_model("llama", n_layers=4, seed=1)[0]  # same architecture, other weights
    before = snapshot(other)
    with pytest.raises(ArtifactError) as err:
        apply_artifacts(other, store)
    msg = str(err.value)
    want = store.entry(0, "q", spec()).original_fingerprint
    from calderalab import models

    got = weight_fingerprint(models.target_linear(other, 0, "q").weight)
    assert "made from another model" in msg and "module 0.q " in msg and want in msg and got in msg
    assert all(torch.equal(snapshot(other)[k], before[k]) for k in before)  # nothing half-applied


def test_one_changed_module_is_the_one_named(store_and_model):
    store, model = store_and_model
    from calderalab import models

    with torch.no_grad():
        models.target_linear(model, 2, "up").weight[0, 0] += 1e-3
    before = snapshot(model)
    with pytest.raises(ArtifactError, match=r"module 2\.up original-weight fingerprint"):
        apply_artifacts(model, store)
    assert all(torch.equal(snapshot(model)[k], before[k]) for k in before)
    apply_artifacts(model, store, protect=(2,))  # protecting that layer skips its check


def test_corrupt_file_aborts_before_any_swap(store_and_model):
    store, model = store_and_model
    entry = store.entry(3, "down", spec())
    path = f"{store.root}/{entry.file}"
    data = bytearray(store.fs.cat_file(path))
    data[-1] ^= 0xFF
    store.fs.pipe_file(path, bytes(data))
    before = snapshot(model)
    with pytest.raises(ArtifactError, match="L003.down.*corrupted"):
        apply_artifacts(model, store)
    assert all(torch.equal(snapshot(model)[k], before[k]) for k in before)


def test_missing_module_named(tmp_path):
    model = tiny_model("llama", n_layers=4)[0]
    store = ArtifactStore(str(tmp_path))
    compress_into(store, model, spec(), layers=[0, 1])
    with pytest.raises(ArtifactError, match=r"module 2\.q .* is missing from the artifact store"):
        apply_artifacts(model, store)
    apply_artifacts(model, store, layers=[0, 1])
    with pytest.raises(ArtifactError, match=r"layers \[7\] out of range: model has 4 layers"):
        assemble_weights(store, model, protect=(7,))


def test_plan_chooses_between_stored_specs(tmp_path):
    model = tiny_model("llama", n_layers=4)[0]
    store = ArtifactStore(str(tmp_path))
    compress_into(store, model, spec(bits=4))
    compress_into(store, model, spec(bits=2), layers=[3])
    with pytest.raises(ArtifactError, match=r"module 3\.q has several stored specs"):
        assemble_weights(store, model)
    plan = plans.plan_from_dict(
        {"n_layers": 4, "base": spec(bits=4).to_dict(),
         "rules": [{"layers": "3", "spec": {"bits": 2}}, {"layers": "0", "spec": "none"}]}
    )
    weights = assemble_weights(store, model, plan=plan)
    assert (0, "q") not in weights
    assert torch.equal(weights[(3, "q")], store.load(3, "q", spec(bits=2)).reconstruct())
    assert torch.equal(weights[(1, "q")], store.load(1, "q", spec(bits=4)).reconstruct())
    missing = plans.uniform_plan(4, spec(bits=3))
    with pytest.raises(ArtifactError, match=r"module 0\.q \(rtn-b3.*\) is missing"):
        assemble_weights(store, model, plan=missing)
