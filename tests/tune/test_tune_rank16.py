"""The optional 16-bit part of the rank in recovery tuning (TuneConfig.rank16, `tune --rank16`).

Planted truth (planted_tune.planted_rank_setup): each original weight is a store's exact Q + L·R plus a
rank-2 matrix that L·R, already at the spec's rank, cannot take on. A 16-bit part of rank 2 can: tuning
with it must end far below tuning without it, from the same start, at exactly 16·k16·(m + n) more bits.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from typer.testing import CliRunner

from calderalab import core, models
from calderalab.artifacts import ArtifactStore, assemble_weights
from calderalab.tune import LowRankLinear, TuneConfig, export_peft, tune_store
from calderalab.tune.store import load_modules
from planted_tune import SPEC, planted_rank_setup

STEPS = dict(steps=48, lr=3e-2, batch_size=8)


@pytest.fixture(scope="module")
def rank_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rank16")
    model, store, calib, heldout = planted_rank_setup(root, extra_rank=2, strength=0.5, n_windows=32)
    reports = {k16: tune_store(model, store, ArtifactStore(str(root / f"k{k16}")), calib, TuneConfig(rank16=k16, **STEPS),
                               heldout)
               for k16 in (0, 2)}
    return model, store, calib, reports


def test_untrained_module_with_a_16bit_part_is_the_stored_module():
    W = torch.randn(24, 40, generator=torch.Generator().manual_seed(2))
    d = core.decompose(W, torch.eye(40), SPEC)
    layer = LowRankLinear(d, None, quant_aware=True, rank16=3, generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 40, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(layer(x), x @ d.reconstruct().T, rtol=0, atol=1e-5)  # L16 starts at zero
    stored = layer.stored()
    assert stored.rank16 == 3 and not stored.dense.Lt.any() and stored.dense.R.dtype == torch.float16
    assert stored.bpw * 24 * 40 == d.bpw * 24 * 40 + 16 * 3 * (24 + 40)
    assert [p.shape for p in layer.parameters()] == [(24, SPEC.rank), (SPEC.rank, 40), (24, 3), (3, 40)]


def test_a_16bit_part_reaches_what_l_and_r_cannot(rank_runs):
    *_, reports = rank_runs
    without, with16 = reports[0].rows, reports[2].rows
    assert without[1] == with16[1]  # the same start: the source store
    assert with16[2].heldout_kl < 0.8 * without[2].heldout_kl, (without, with16)
    assert with16[2].calib_kl < 0.8 * without[2].calib_kl, (without, with16)
    assert without[2].heldout_kl < without[1].heldout_kl  # tuning L, R alone still helps a little


def test_the_16bit_part_is_stored_counted_and_q_frozen(rank_runs):
    model, store, _, reports = rank_runs
    source = dict(((e.layer, e.module), d) for e, d in load_modules(store, model))
    tuned = dict(((e.layer, e.module), d) for e, d in load_modules(ArtifactStore(reports[2].out_url), model))
    extra_bits = 0
    for key, d in tuned.items():
        s = source[key]
        assert d.rank16 == 2 and d.dense.Lt.any() and torch.equal(d.Q.codes, s.Q.codes)
        extra_bits += 16 * 2 * sum(d.shape)
    n = sum(d.shape[0] * d.shape[1] for d in tuned.values())
    assert reports[2].rows[2].bpw == pytest.approx(reports[2].rows[1].bpw + extra_bits / n, abs=1e-12)
    assert reports[0].rows[2].bpw == reports[0].rows[1].bpw  # without it the bits do not change
    manifest_bpw = {(e.layer, e.module): e.metrics["bpw"] for e in ArtifactStore(reports[2].out_url).manifest().modules.values()}
    assert all(manifest_bpw[key] == pytest.approx(d.bpw) for key, d in tuned.items())


def test_peft_carries_the_16bit_part_as_more_rank(rank_runs, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    original, _, _, reports = rank_runs
    tuned_store = ArtifactStore(reports[2].out_url)
    model = copy.deepcopy(original)
    ids = torch.randint(4, 260, (2, 24), generator=torch.Generator().manual_seed(5))
    with models.swapped_weights(model, assemble_weights(tuned_store, model)), torch.no_grad():
        expected = model(input_ids=ids).logits
    _, tokenizer = models.tiny_model("llama", n_layers=1, hidden=32)
    out = export_peft(model, tokenizer, tuned_store, tmp_path / "lora")
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == SPEC.rank + 2
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(out / "backbone", dtype=torch.float32),
                                           out / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=ids).logits, expected, rtol=0, atol=1e-4)


def test_rank16_that_cannot_fit_is_refused_before_training(rank_runs, tmp_path):
    model, store, calib, reports = rank_runs
    with pytest.raises(ValueError, match="at most 28"):  # 32 - rank 4 on the 32-wide tiny modules
        tune_store(model, store, ArtifactStore(str(tmp_path / "big")), calib, TuneConfig(rank16=29, steps=1))
    with pytest.raises(ValueError, match="already holds a 16-bit rank part of rank 2"):
        tune_store(model, ArtifactStore(reports[2].out_url), ArtifactStore(str(tmp_path / "again")), calib,
                   TuneConfig(rank16=3, steps=1))
    with pytest.raises(ValueError, match="rank16=-1"):
        TuneConfig(rank16=-1)
    assert not ArtifactStore(str(tmp_path / "big")).exists()


def test_tune_cli_takes_rank16(planted_problem, tmp_path):
    from calderalab.cli import app
    from helpers_cli import calibration_text

    model, tokenizer, store, *_ = planted_problem
    model_dir = models.export_checkpoint(model, tokenizer, tmp_path / "model")
    result = CliRunner().invoke(app, ["tune", str(model_dir), store.url, "--out", str(tmp_path / "tuned"), "--calib",
                                      str(calibration_text(tmp_path)), "--calib-samples", "4", "--seq-len", "32",
                                      "--steps", "2", "--lr", "1e-2", "--rank16", "2", "--report", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    record = json.loads((tmp_path / "rep" / "tuning.json").read_text())
    assert record["settings"]["rank16"] == 2
    before, after = record["rows"][1]["bpw"], record["rows"][2]["bpw"]
    assert after > before and "bpw" in result.output
    bad = CliRunner().invoke(app, ["tune", str(model_dir), store.url, "--out", str(tmp_path / "x"), "--rank16", "-2"])
    assert bad.exit_code != 0 and "rank16=-2" in str(bad.exception)
