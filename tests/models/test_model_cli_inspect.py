"""`calderalab inspect` on an exported tiny checkpoint (fast) and on a bad reference."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from calderalab.models import export_checkpoint, tiny_model

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _run(*args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "200", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "calderalab", *args], capture_output=True, text=True, env=env)


def test_inspect_local_checkpoint_prints_layers_and_shapes(tmp_path):
    model, tokenizer = tiny_model("qwen3", n_layers=3, hidden=64, intermediate=96)
    export_checkpoint(model, tokenizer, tmp_path / "tiny")
    from typer.testing import CliRunner

    from calderalab.cli import app

    out = CliRunner().invoke(app, ["inspect", str(tmp_path / "tiny")], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "decoder layers: 3" in out.stdout and "Qwen3ForCausalLM" in out.stdout
    assert "mlp.down_proj" in out.stdout and "64 x 96" in out.stdout and "32 x 64" in out.stdout
    assert "18,432" in out.stdout  # down: 64*96 per layer, x3 layers


def test_inspect_bad_reference_exits_2_with_message(tmp_path):
    out = _run("inspect", "Nope/Not-Cached", env_extra={"HF_HOME": str(tmp_path)})
    assert out.returncode == 2
    assert "not in the local Hugging Face cache" in out.stderr and "Traceback" not in out.stderr
