"""`calderalab evaluate` end to end on a tiny planted model saved as a local checkpoint."""

from __future__ import annotations

from tiny_lm import chain, scripted_llama
from typer.testing import CliRunner

from calderalab.cli import app
from calderalab.eval.tasks import canonical_instances


def test_evaluate_command_prints_the_goodhart_table(tok, tmp_path):
    model = scripted_llama(tok, chain("Answer: B\n"))  # choice: always picks letter B
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    args = ["evaluate", "--model", str(tmp_path), "--suite", "canonical", "--scoring", "choice"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "understanding" in result.output and "discount_coupon" in result.output
    # The model always answers letter B, so understanding = share of instances whose right plan is B.
    n_b = sum(i.correct_letter == "B" for i in canonical_instances())
    all_row = next(line for line in result.output.splitlines() if " all " in line)
    assert f"{round(100 * n_b / 7)}%" in all_row.split("│")[3]


def test_evaluate_command_rejects_an_unknown_suite():
    result = CliRunner().invoke(app, ["evaluate", "--suite", "mmlu"])
    assert result.exit_code != 0 and "unknown suite" in result.output
