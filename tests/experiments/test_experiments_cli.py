"""The experiments / report / study commands: registered, documented, and clear on bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _run(*args):
    env = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "calderalab", *args], capture_output=True, text=True, env=env)


def test_commands_are_registered():
    from typer.testing import CliRunner

    from calderalab.cli import app

    out = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    for name in ("ablate", "sweep", "min-protect", "grid", "report", "study"):
        assert name in out.stdout, name


def test_report_on_missing_database_is_a_clear_error(tmp_path):
    res = _run("report", "1", "--db", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "r"))
    assert res.returncode == 2
    assert "none.sqlite does not exist" in res.stderr and "Traceback" not in res.stderr


def test_study_rejects_bad_bits_before_loading_anything(tmp_path):
    res = _run("study", "--bits", "9", "--out", str(tmp_path / "s"))
    assert res.returncode == 2
    assert "bits=9 must be an integer in 2..8" in res.stderr and "Traceback" not in res.stderr


def test_min_protect_rejects_a_bad_margin_before_loading_anything(tmp_path):
    res = _run("min-protect", "--margin", "5", "--out", str(tmp_path / "m"))
    assert res.returncode == 2
    assert "margin is an execution-rate drop in (0, 1)" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "m").exists()
