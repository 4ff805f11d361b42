"""`calderalab evaluate` end to end on a tiny planted model saved as a local checkpoint."""

from __future__ import annotations

from tiny_lm import chain, scripted_llama
from typer.testing import CliRunner

from calderalab.cli import app


def test_evaluate_command_prints_the_goodhart_table(tok, tmp_path):
    model = scripted_llama(tok, chain("Answer: B\n"))  # choice: always picks letter B
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    result = CliRunner().invoke(app, ["evaluate", "--model", str(tmp_path), "--suite", "canonical", "--scoring", "choice"])
    assert result.exit_code == 0, result.output
    assert "understanding" in result.output and "discount_coupon" in result.output
    assert "all" in result.output and "parse failures" in result.output


def test_evaluate_command_rejects_an_unknown_suite():
    result = CliRunner().invoke(app, ["evaluate", "--suite", "mmlu"])
    assert result.exit_code != 0 and "unknown suite" in result.output
