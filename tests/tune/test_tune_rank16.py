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
    assert "tuning steps (KL " in result.output and "2/2 done" in result.output  # plain progress lines off a terminal
    bad = CliRunner().invoke(app, ["tune", str(model_dir), store.url, "--out", str(tmp_path / "x"), "--rank16", "-2"])
    assert bad.exit_code != 0 and "rank16=-2" in str(bad.exception)
    no_plan = CliRunner().invoke(app, ["tune", str(model_dir), store.url, "--out", str(tmp_path / "y"), "--plan",
                                       str(tmp_path / "missing.json")])
    assert no_plan.exit_code != 0 and "plan file" in str(no_plan.exception) and "not found" in str(no_plan.exception)


LDLQ3 = core.CompressionSpec(method="ldlq", bits=3)
LDLQ4 = core.CompressionSpec(method="ldlq", bits=4)


def test_ldlq_modules_of_a_plan_store_are_tuned_through_their_16bit_part(tmp_path):
    """A store holding every module twice (ldlq 3 and 4 bits, as `--plan kl` stores do), a plan choosing the
    3-bit one, and an original that is that Q plus a rank-2 matrix: without rank16 there is nothing to train;
    with it the KL falls, every Q comes out byte for byte, and the new store holds the plan's spec alone."""
    from calderalab import plans

    model, store, calib, heldout = planted_rank_setup(tmp_path, strength=0.5, n_windows=32, specs=(LDLQ3, LDLQ4))
    plan = plans.Plan(2, tuple(((layer, name), LDLQ3) for layer in range(2) for name in core.MODULE_NAMES))
    with pytest.raises(ValueError, match="nothing to tune without a 16-bit part"):
        tune_store(model, store, ArtifactStore(str(tmp_path / "none")), calib, TuneConfig(steps=1), plan=plan)
    with pytest.raises(Exception, match="several|plan"):  # the store holds two specs per module
        tune_store(model, store, ArtifactStore(str(tmp_path / "noplan")), calib, TuneConfig(rank16=2, steps=1))
    out = ArtifactStore(str(tmp_path / "tuned"))
    report = tune_store(model, store, out, calib, TuneConfig(rank16=2, **STEPS), heldout, plan=plan)
    before, after = report.rows[1], report.rows[2]
    assert after.heldout_kl < 0.8 * before.heldout_kl, report.rows
    assert report.n_tuned == 14 and report.n_copied == 0 and report.paired.endswith(": lower")
    source = {(e.layer, e.module): d for e, d in load_modules(store, model, plan)}
    for entry, d in load_modules(out, model):  # no plan needed: one spec per module now
        assert d.spec == LDLQ3 and d.factors is None and d.rank16 == 2
        assert torch.equal(d.Q.codes, source[(entry.layer, entry.module)].Q.codes)
    assert out.header().calibration["tuning"]["plan_hash"] == plan.hash()
    # PEFT: the backbone is Q alone, the adapter the 16-bit part (rank 2), and together they are the store.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.randint(4, 260, (2, 24), generator=torch.Generator().manual_seed(5))
    copy_ = copy.deepcopy(model)
    with models.swapped_weights(copy_, assemble_weights(out, copy_)), torch.no_grad():
        expected = copy_(input_ids=ids).logits
    _, tokenizer = models.tiny_model("llama", n_layers=1, hidden=32)
    lora = export_peft(copy_, tokenizer, out, tmp_path / "lora")
    assert json.loads((lora / "adapter" / "adapter_config.json").read_text())["r"] == 2
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lora / "backbone", dtype=torch.float32),
                                           lora / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=ids).logits, expected, rtol=0, atol=1e-4)
