"""`calderalab eval` end to end on a tiny planted model saved as a local checkpoint."""

from __future__ import annotations

from tiny_lm import chain, scripted_llama
from typer.testing import CliRunner

from calderalab.cli import app
from calderalab.eval.tasks import canonical_instances


def test_eval_command_prints_the_goodhart_table(tok, tmp_path):
    model = scripted_llama(tok, chain("Answer: B\n"))  # choice: always picks letter B
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    args = ["eval", str(tmp_path / "model"), "--scoring", "choice", "--db", str(tmp_path / "runs.sqlite")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "| Understanding |" in result.output and "| discount_coupon | 15 |" in result.output
    # The model always answers letter B, so understanding = share of instances whose right plan is B.
    n_b = sum(i.correct_letter == "B" for i in canonical_instances())
    baseline_row = next(line for line in result.output.splitlines() if line.startswith("| Baseline |"))
    assert baseline_row.split("|")[3].strip().startswith(f"{n_b}/7 ")


def test_eval_command_rejects_an_unknown_suite(tmp_path):
    result = CliRunner().invoke(app, ["eval", "smollm2", "--suite", "mmlu", "--db", str(tmp_path / "r.sqlite")])
    assert isinstance(result.exception, ValueError) and "goodhart" in str(result.exception)  # main() prints it cleanly
