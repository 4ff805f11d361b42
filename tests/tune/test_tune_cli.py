"""`calderalab tune` and `calderalab export-lora` as a user runs them, on the planted tiny model saved to disk."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from calderalab import models
from calderalab.artifacts import ArtifactStore
from calderalab.cli import app


def test_tune_then_export_lora(planted_problem, tmp_path):
    from helpers_cli import calibration_text

    model, tokenizer, store, *_ = planted_problem
    model_dir = models.export_checkpoint(model, tokenizer, tmp_path / "model")
    text = calibration_text(tmp_path)
    out = tmp_path / "tuned"
    result = CliRunner().invoke(app, ["tune", str(model_dir), store.url, "--out", str(out), "--calib", str(text),
                                      "--calib-samples", "4", "--seq-len", "32", "--steps", "2",
                                      "--heldout", str(text), "--heldout-tokens", "600", "--report", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    record = json.loads((tmp_path / "rep" / "tuning.json").read_text())
    assert len(record["losses"]) == 2 and [row["label"] for row in record["rows"]] == ["original", "compressed", "tuned"]
    assert record["settings"]["steps"] == 2 and record["rows"][2]["heldout_kl"] < record["rows"][1]["heldout_kl"]
    assert (tmp_path / "rep" / "tuning.png").stat().st_size > 0
    for label in ("original", "compressed", "tuned"):
        assert label in result.output
    assert "14 modules tuned" in result.output and ArtifactStore(str(out)).exists()
    again = CliRunner().invoke(app, ["tune", str(model_dir), store.url, "--out", str(out)])
    assert again.exit_code != 0 and "already holds an artifact store" in str(again.exception)
    exported = CliRunner().invoke(app, ["export-lora", str(model_dir), str(out), "--out", str(tmp_path / "lora")])
    assert exported.exit_code == 0, exported.output + repr(exported.exception)
    assert (tmp_path / "lora" / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "lora" / "backbone" / "config.json").is_file()
