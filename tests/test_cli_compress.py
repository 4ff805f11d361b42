"""compress → validate → export → ppl through the CLI, on a tiny model saved as a local checkpoint."""

import pytest
import torch
from typer.testing import CliRunner

from calderalab.cli import app
from calderalab.models import export_checkpoint, tiny_model


@pytest.fixture(scope="module")
def local_model(tmp_path_factory):
    model, tokenizer = tiny_model("llama", n_layers=2, seed=0)
    path = tmp_path_factory.mktemp("m") / "tiny"
    export_checkpoint(model, tokenizer, path)
    return str(path)


@pytest.fixture(scope="module")
def store(local_model, tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("s") / "store"
    result = CliRunner().invoke(app, ["compress", local_model, "--bits", "4", "--rank", "4", "--outer-iters", "1",
                                      "--calib", str(shared_data / "wikitext-2" / "valid.txt"),
                                      "--calib-samples", "4", "--seq-len", "32", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "mean weight correlation" in result.output
    return out


def test_validate_passes_then_detects_corruption(local_model, store, tmp_path):
    import shutil

    # a random tiny model's logits are nearly flat, so its greedy answer is not a meaningful
    # replacement check (tests/artifacts/test_validate.py covers that check); modules only here
    ok = CliRunner().invoke(app, ["validate", local_model, str(store), "--no-replacement"])
    assert ok.exit_code == 0, ok.output
    assert "validation passed" in ok.output
    broken = tmp_path / "broken"
    shutil.copytree(store, broken)
    victim = sorted((broken / "modules").glob("L001.up.*.safetensors"))[0]
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0xFF
    victim.write_bytes(bytes(data))
    bad = CliRunner().invoke(app, ["validate", local_model, str(broken), "--no-replacement"])
    assert bad.exit_code == 1
    assert "module 1.up" in bad.output and "corrupted" in bad.output


def test_validate_refuses_another_model(store, tmp_path):
    other, tok = tiny_model("llama", n_layers=2, seed=1)
    export_checkpoint(other, tok, tmp_path / "other")
    res = CliRunner().invoke(app, ["validate", str(tmp_path / "other"), str(store), "--no-replacement"])
    assert res.exit_code == 1
    assert "another model" in res.output


def test_export_round_trips_through_from_pretrained(local_model, store, tmp_path):
    from transformers import AutoModelForCausalLM

    from calderalab import models
    from calderalab.artifacts import ArtifactStore, apply_artifacts

    out = tmp_path / "hf"
    res = CliRunner().invoke(app, ["export", local_model, str(store), "--out", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    expected, _ = models.load_model(local_model)
    original_logits = expected(input_ids=torch.arange(4, 40).unsqueeze(0)).logits
    apply_artifacts(expected, ArtifactStore(str(store)))
    loaded = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    ids = torch.arange(4, 40).unsqueeze(0)
    with torch.no_grad():
        got, want = loaded(input_ids=ids).logits, expected(input_ids=ids).logits
    assert torch.equal(got, want)
    assert not torch.equal(want, original_logits)  # the artifacts really changed the model


def test_ppl_command(local_model, store, shared_data, tmp_path):
    text = str(shared_data / "wikitext-2" / "test.txt")
    window = ["--data", text, "--context", "32", "--stride", "16", "--max-tokens", "200"]
    base = CliRunner().invoke(app, ["ppl", local_model, *window])
    comp = CliRunner().invoke(app, ["ppl", local_model, *window, "--artifacts", str(store), "--reference-cache", str(tmp_path)])
    assert base.exit_code == 0 and comp.exit_code == 0, base.output + comp.output
    assert "199 tokens" in base.output and "199 tokens, 12 windows" in comp.output
    value = lambda out, label: float(out.split(label)[1].split()[0])  # noqa: E731
    assert value(base.output, "perplexity ") > 1.0
    assert value(base.output, "perplexity ") != value(comp.output, "perplexity ")
    assert value(comp.output, "original ") == pytest.approx(value(base.output, "perplexity "), abs=1e-4)
    assert value(comp.output, "ratio ") == pytest.approx(value(comp.output, "perplexity ") / value(base.output, "perplexity "), abs=2e-4)
    assert value(comp.output, "KL(original ‖ compressed) ") > 0
    assert 0 < float(comp.output.split("top-1 agreement ")[1].split("%")[0]) <= 100
    assert len(list(tmp_path.glob("reference-*.pt"))) == 1  # the original's reference, cached for the next store


def test_bad_options_are_named(local_model, tmp_path):
    res = CliRunner().invoke(app, ["compress", local_model, "--bits", "3", "--protect", "0", "--ranks", "1:8", "--out", str(tmp_path / "x")])
    assert res.exit_code != 0
    assert "--protect" in str(res.exception)


@pytest.fixture(scope="module")
def deep_store(tmp_path_factory, shared_data):
    """A 4-layer tiny model (layer groups need >= 4 layers) and its 4-bit rank-4 store."""
    model, tokenizer = tiny_model("llama", n_layers=4, seed=0)
    path = tmp_path_factory.mktemp("m4") / "tiny4"
    export_checkpoint(model, tokenizer, path)
    out = path.parent / "store"
    result = CliRunner().invoke(app, ["compress", str(path), "--bits", "4", "--rank", "4", "--outer-iters", "1",
                                      "--calib", str(shared_data / "wikitext-2" / "valid.txt"),
                                      "--calib-samples", "4", "--seq-len", "32", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return str(path), out


def test_sensitivity_profiles_the_stored_modules(deep_store, tmp_path):
    import json

    local_model, store = deep_store
    out = tmp_path / "sens"
    res = CliRunner().invoke(app, ["sensitivity", local_model, "--artifacts", str(store), "--samples", "3",
                                   "--max-new-tokens", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    data = json.loads((out / "profile.json").read_text())
    settings = data["settings"]
    # the spec is the store's (4-bit rank 4), not the command's defaults (3-bit rank 32)
    assert settings["artifacts"] == str(store) and (settings["spec"]["bits"], settings["spec"]["rank"]) == (4, 4)
    assert "calib" not in settings and len(data["rows"]) == 4  # no Hessians were collected


def test_sensitivity_artifacts_errors_are_named(deep_store, tmp_path):
    from calderalab.errors import ArtifactError

    _, store = deep_store
    other, tok = tiny_model("llama", n_layers=4, seed=1)
    export_checkpoint(other, tok, tmp_path / "other")
    res = CliRunner().invoke(app, ["sensitivity", str(tmp_path / "other"), "--artifacts", str(store), "--samples", "2"])
    assert isinstance(res.exception, ArtifactError) and "another model" in str(res.exception)
    res = CliRunner().invoke(app, ["sensitivity", str(tmp_path / "other"), "--artifacts", str(tmp_path / "nowhere")])
    assert isinstance(res.exception, ArtifactError) and "no artifact store" in str(res.exception)


def test_sensitivity_refuses_a_model_too_shallow_before_any_work(local_model, store):
    res = CliRunner().invoke(app, ["sensitivity", local_model, "--artifacts", str(store), "--samples", "2"])
    assert isinstance(res.exception, ValueError) and "at least 4 layers" in str(res.exception)
    assert "[reference answers" not in res.output  # refused before the reference answers were generated


def test_compress_with_the_e8p_codebook(local_model, shared_data, tmp_path):
    """--codebook e8p reaches the spec: the store's modules are 2-bit E8P with honest bpw 2 + 16/d_in + ..."""
    from calderalab.artifacts import ArtifactStore

    out = tmp_path / "e8p"
    result = CliRunner().invoke(app, ["compress", local_model, "--bits", "2", "--method", "ldlq", "--codebook", "e8p",
                                      "--calib", str(shared_data / "wikitext-2" / "valid.txt"),
                                      "--calib-samples", "4", "--seq-len", "32", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    modules = ArtifactStore(str(out)).manifest().modules
    assert modules and all(key.endswith("-e8p") for (_, _, key) in modules)
    for (_, _, key), entry in modules.items():
        d_out, d_in = entry.shape
        assert entry.metrics["bpw"] == pytest.approx(2 + 16 / d_in + (32 + 128) / (d_out * d_in))
    bad = CliRunner().invoke(app, ["compress", local_model, "--bits", "5", "--codebook", "e8p", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "2, 3 and 4-bit codebooks" in str(bad.exception)


def test_compress_fast_options_reach_the_store(local_model, shared_data, tmp_path):
    """--hessian-dtype bfloat16 and --svd randomized reach the calibration record and the spec (key -rsvd)."""
    from calderalab.artifacts import ArtifactStore

    out = tmp_path / "fast"
    result = CliRunner().invoke(app, ["compress", local_model, "--bits", "3", "--rank", "4", "--svd", "randomized",
                                      "--hessian-dtype", "bfloat16", "--calib", str(shared_data / "wikitext-2" / "valid.txt"),
                                      "--calib-samples", "4", "--seq-len", "32", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    manifest = ArtifactStore(str(out)).manifest()
    assert manifest.header.calibration["hessian_dtype"] == "bfloat16"
    assert manifest.modules and all(key.endswith("-rsvd") for (_, _, key) in manifest.modules)
