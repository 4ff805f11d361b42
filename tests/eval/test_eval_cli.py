"""`calderalab eval` end to end on a tiny planted model saved as a local checkpoint."""

from __future__ import annotations

from tiny_lm import chain, scripted_llama
from typer.testing import CliRunner

from calderalab.cli import app


def test_eval_command_flags_a_letter_biased_model_as_not_informative(tok, tmp_path):
    # The planted model answers letter B whatever the options say (the old scorer's blind spot: its
    # "understanding" was the share of right plans at B). Debiased, it is at chance, and every table
    # says so before any gap figure.
    model = scripted_llama(tok, chain("Answer: B\n"))
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    args = ["eval", str(tmp_path / "model"), "--canonical", "--db", str(tmp_path / "runs.sqlite")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    first = next(line for line in result.output.splitlines() if line.startswith("Baseline:"))
    assert first.startswith("Baseline: gap figures are NOT measurable") and "not informative" in first
    assert "| Understanding |" in result.output and "| discount_coupon | 15 |" in result.output
    baseline_row = next(line for line in result.output.splitlines() if line.startswith("| Baseline |"))
    assert "chance 25%" in baseline_row and baseline_row.rstrip().endswith("| not measurable |")
    shares = next(line for line in result.output.splitlines() if line.startswith("| Baseline | letters"))
    assert "| A 0% B 100% C 0% D 0% |" in shares  # the raw pick: always B
    assert "p vs chance" in result.output and "Best surface heuristic" in result.output


def test_eval_command_rejects_an_unknown_suite(tmp_path):
    result = CliRunner().invoke(app, ["eval", "smollm2", "--suite", "mmlu", "--db", str(tmp_path / "r.sqlite")])
    assert isinstance(result.exception, ValueError) and "goodhart" in str(result.exception)  # main() prints it cleanly
