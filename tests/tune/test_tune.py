"""Recovery tuning on a planted problem (tests/tune/planted_tune.py): the optimum is reachable with
Q frozen, so tuning must lower the KL a lot; Q must come out byte for byte; the store must validate
and be reproducible."""

from __future__ import annotations

import json

import pytest
import torch

from calderalab import core, models
from calderalab.artifacts import ArtifactStore
from calderalab.artifacts.validate import ValidationConfig, validate_store
from calderalab.core import lowrank
from calderalab.errors import ArtifactError
from calderalab.tune import LowRankLinear, TuneConfig, backbone, lora_pair, quantize_factor, tune_store
from planted_tune import SPEC

PLANTED = TuneConfig(steps=48, lr=1e-2)
FROZEN = ("Q.codes", "Q.scale", "Q.offset", "w_scale", "rotation_seeds")


@pytest.fixture(scope="module")
def planted(planted_problem, tmp_path_factory):
    model, tokenizer, store, calib, heldout = planted_problem
    out = ArtifactStore(str(tmp_path_factory.mktemp("tuned") / "store"))
    report = tune_store(model, store, out, calib, PLANTED, heldout)
    return model, tokenizer, store, out, report, calib


def _tensors(store, entry):
    from calderalab.artifacts import codec

    return codec.decode(store.read_verified(entry))


def test_quantize_factor_is_the_compression_quantiser():
    F = torch.randn(6, 40, generator=torch.Generator().manual_seed(0))
    ours, theirs = quantize_factor(F, 3), lowrank._quantize(F, 3)
    for field in ("codes", "scale", "offset"):
        assert torch.equal(getattr(ours, field), getattr(theirs, field))


def test_backbone_plus_lora_pair_is_the_stored_weight():
    W = torch.randn(24, 40, generator=torch.Generator().manual_seed(1))
    d = core.decompose(W, torch.eye(40), SPEC)  # rotated: hadamard defaults to True for caldera
    B, A = lora_pair(d.factors.Lt.dequantize().T, d.factors.R.dequantize(), d.rotation_seeds, d.w_scale)
    assert d.rotation_seeds is not None and B.shape == (24, SPEC.rank) and A.shape == (SPEC.rank, 40)
    torch.testing.assert_close(backbone(d) + B @ A, d.reconstruct(), rtol=0, atol=1e-5)


def test_untrained_module_is_the_stored_module():
    """Before any step the layer computes x·Ŵᵀ, and re-quantising its factors gives the stored codes back
    (so an untuned store is unchanged)."""
    W = torch.randn(24, 40, generator=torch.Generator().manual_seed(2))
    d = core.decompose(W, torch.eye(40), SPEC)
    layer = LowRankLinear(d, None, quant_aware=True)
    x = torch.randn(5, 40, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(layer(x), x @ d.reconstruct().T, rtol=0, atol=1e-5)
    again = layer.stored()
    for new, old in ((again.factors.Lt, d.factors.Lt), (again.factors.R, d.factors.R)):
        assert torch.equal(new.codes, old.codes) and torch.equal(new.scale, old.scale)


def test_tuning_lowers_the_kl_of_a_planted_perturbation(planted):
    *_, report, _ = planted
    original, before, after = report.rows
    assert (original.calib_kl, original.heldout_kl) == (0.0, 0.0)
    assert before.calib_kl > 0.1  # the perturbation is visible
    assert after.calib_kl < 0.5 * before.calib_kl, report.rows
    assert after.heldout_kl < before.heldout_kl, report.rows  # not only the calibration windows
    assert report.n_tuned == 14 and report.n_copied == 0 and len(report.losses) == PLANTED.steps
    assert report.paired.startswith("held-out, tuned against compressed: KL -") and report.paired.endswith(": lower")


def test_q_is_unchanged_byte_for_byte_and_factors_move(planted):
    model, _, store, out, *_ = planted
    source, tuned = store.manifest(), out.manifest()
    assert sorted(source.modules) == sorted(tuned.modules)
    moved = 0
    for key, entry in source.modules.items():
        a, b = _tensors(store, entry), _tensors(out, tuned.modules[key])
        for name in FROZEN:
            assert a[name].numpy().tobytes() == b[name].numpy().tobytes(), (key, name)
        moved += not torch.equal(a["L.codes"], b["L.codes"])
        assert tuned.modules[key].original_fingerprint == entry.original_fingerprint
    assert moved == len(source.modules)


def test_tuned_store_validates_and_records_its_source(planted):
    model, tokenizer, store, out, _, calib = planted
    # Replacement check off, as for every tiny random model here: its greedy text is noise.
    config = ValidationConfig(replacement_check=False)
    report = validate_store(model, tokenizer, out, config)
    assert report.passed, report.failures()
    # W is the true Q + L·R, so moving L, R towards it must raise the weight correlation.
    assert report.mean_weight_correlation > validate_store(model, tokenizer, store, config).mean_weight_correlation
    header = json.loads((out.fs.cat_file(out._path("manifest.json"))))
    assert header["model"] == store.header().model
    tuning = header["calibration"]["tuning"]
    assert tuning["source_manifest_sha256"] == store.manifest().content_hash()
    assert tuning["calibration"]["token_sha256"] == calib.sha256 and tuning["settings"]["steps"] == PLANTED.steps
    assert len(header["modules"]) == 14  # consolidated


def test_same_seed_same_store(planted_problem, tmp_path):
    """Two runs with one seed write byte-identical module files and entries (only the header's time
    differs), also when the caller's model has gradients switched on: only L and R ever learn."""
    from helpers_cli import files

    model, _, store, calib, _ = planted_problem
    config = TuneConfig(steps=3, lr=1e-2)
    written = []
    try:
        for run in range(2):
            model.requires_grad_(run == 0)
            tune_store(model, store, ArtifactStore(str(tmp_path / f"run{run}")), calib, config)
            assert all(p.grad is None and p.requires_grad == (run == 0) for p in model.parameters())
            written.append({k: v for k, v in files(tmp_path / f"run{run}").items() if k != "manifest.json"})
    finally:
        model.requires_grad_(False)
    assert len(written[0]) == 2 * 14 and written[0] == written[1]


def test_refuses_an_existing_output_store(planted):
    model, _, store, out, _, calib = planted
    with pytest.raises(ArtifactError, match="already holds an artifact store"):
        tune_store(model, store, out, calib, PLANTED)


def test_refuses_a_store_without_factors(tmp_path):
    model, _ = models.tiny_model("llama", n_layers=1, hidden=32, with_tokenizer=False)
    store = ArtifactStore(str(tmp_path / "rtn"))
    store.init({"ref": "tiny"}, {})
    rtn = core.CompressionSpec(method="rtn", bits=4)
    for name in core.MODULE_NAMES:
        W = models.target_linear(model, 0, name).weight
        store.put(0, name, rtn, core.decompose(W, None, rtn), W)
    ids = torch.randint(4, 260, (2, 16), generator=torch.Generator().manual_seed(0))
    from calderalab.calib import CalibData

    with pytest.raises(ValueError, match="no low-rank factors"):
        tune_store(model, store, ArtifactStore(str(tmp_path / "out")), CalibData(ids, "x", 2), PLANTED)


def test_kl_mean_is_the_mean_token_kl():
    from calderalab.eval.divergence import token_kl
    from calderalab.tune.train import kl_mean

    gen = torch.Generator().manual_seed(4)
    ref, logits = torch.randn(2, 5, 11, generator=gen, dtype=torch.float64), torch.randn(2, 5, 11, generator=gen, dtype=torch.float64)
    exact = token_kl(torch.log_softmax(ref, -1), torch.log_softmax(logits, -1)).mean()
    torch.testing.assert_close(kl_mean(ref, logits).double(), exact, rtol=1e-5, atol=1e-7)
    assert float(kl_mean(ref, ref)) == pytest.approx(0.0, abs=1e-6)


def test_verdict_says_when_the_tuned_store_is_worse():
    from calderalab.tune.run import TuneReport, TuneRow

    def report(after_heldout, after_calib=0.2, heldout=True):
        rows = (TuneRow("original", 0.0, 0.0, 10.0), TuneRow("compressed", 0.3, 0.4 if heldout else None, 12.0),
                TuneRow("tuned", after_calib, after_heldout if heldout else None, 11.0))
        return TuneReport(rows, (0.3, 0.2), "memory://x", 1, 0)

    assert report(0.35).verdict() is None  # better on held-out text
    worse = report(0.45).verdict()
    assert worse is not None and "held-out KL went from 0.40000 to 0.45000" in worse
    assert report(None, after_calib=0.25, heldout=False).verdict() is None
    assert "calibration" in report(None, after_calib=0.31, heldout=False).verdict()
