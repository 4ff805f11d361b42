"""kl_budget: the per-module knapsack spends bits where the predicted KL is, never past the target,
and `compress --plan kl` runs end to end and refuses bad options before the model loads."""

from __future__ import annotations

import pytest

from calderalab import core, kl_budget
from calderalab.errors import PlanError

SHAPES = {(l, n): ((64, 32) if n in ("gate", "up") else (32, 64) if n == "down" else (32, 32))
          for l in range(3) for n in core.MODULE_NAMES}
SETTINGS = kl_budget.KLBudgetSettings(3.5, bits=(2, 3, 4, 8), codebook="scalar")


def _errors(specs) -> dict:
    """The error of b bits: 2^-b, the same on every module (the grid's 6 dB per bit)."""
    return {name: {k: 2.0 ** -spec.bits for k in SHAPES} for name, spec in specs.items()}


def test_the_sensitive_module_gets_the_bits_and_the_target_holds():
    specs = kl_budget.candidate_specs(SETTINGS)
    sensitivity = {k: 1.0 for k in SHAPES} | {(1, "v"): 1e4}
    chosen = kl_budget.kl_plan(sensitivity, {k: 1.0 for k in SHAPES}, _errors(specs), specs, 3.5, SHAPES)
    picked = dict(chosen.choice)
    assert picked[(1, "v")] == "8b" and sum(name == "8b" for name in picked.values()) == 1
    assert chosen.bpw <= 3.5 and chosen.plan.preset == "kl"
    exact = sum(core.module_bits(chosen.plan.spec(*k), *s) for k, s in SHAPES.items()) / sum(a * b for a, b in SHAPES.values())
    assert chosen.bpw == pytest.approx(exact)
    # no uniform candidate within the budget predicts less (the knapsack is exact)
    assert all(chosen.predicted_kl <= kl + 1e-12 for _, bpw, kl in chosen.uniform if bpw <= 3.5)
    flat = kl_budget.kl_plan({k: 1.0 for k in SHAPES}, {k: 1.0 for k in SHAPES}, _errors(specs), specs, 3.5, SHAPES)
    assert dict(flat.choice)[(1, "v")] != "8b"  # the 8 bits followed the sensitivity, not the module


def test_candidates_use_e8p_where_it_has_a_codebook():
    specs = kl_budget.candidate_specs(kl_budget.KLBudgetSettings(4.3))
    assert list(specs) == ["2b-e8p", "3b-e8p", "4b-e8p", "5b", "6b", "8b"]
    assert all(s.method == "ldlq" and s.seed == 0 for s in specs.values()) and specs["5b"].codebook == "scalar"
    assert {s.seed for s in kl_budget.candidate_specs(kl_budget.KLBudgetSettings(4.3, seed=7)).values()} == {7}


def test_targets_and_settings_that_cannot_work_are_refused():
    with pytest.raises(PlanError, match="below the cheapest candidate"):
        kl_budget.check_target(kl_budget.KLBudgetSettings(2.0, bits=(3, 4), codebook="scalar"), SHAPES)
    for bad, message in (({"bpw": 1.0}, "2 to 16"), ({"bpw": 3.0, "bits": (3, 3)}, "distinct"),
                         ({"bpw": 3.0, "bits": (1, 3)}, "2..8"), ({"bpw": 3.0, "codebook": "nf4"}, "e8p or scalar")):
        with pytest.raises(ValueError, match=message):
            kl_budget.KLBudgetSettings(**bad)
    specs = kl_budget.candidate_specs(SETTINGS)
    errors = _errors(specs)
    errors["2b"].pop((0, "q"))
    with pytest.raises(ValueError, match="no measured error"):
        kl_budget.kl_plan({k: 1.0 for k in SHAPES}, {k: 1.0 for k in SHAPES}, errors, specs, 3.5, SHAPES)


def test_compress_cli_refuses_bad_kl_options_before_loading(tmp_path, capsys):
    from helpers_cli import error_lines, run_main, tiny_checkpoint

    model = tiny_checkpoint(tmp_path, n_layers=4)
    base = ["compress", str(model), "--out", str(tmp_path / "store"), "--plan", "kl"]
    for extra, message in (([], "needs --bpw"), (["--bpw", "1.5"], "2 to 16"),
                           (["--bpw", "2.01", "--budget-bits", "3,4"], "below the cheapest candidate"),
                           (["--bpw", "3.5", "--bits", "3"], "drop --bits"),
                           (["--bpw", "3.5", "--damp", "0.1"], "--damp"),
                           (["--bpw", "3.5", "--codebook", "nf4"], "e8p or scalar")):
        code, out, err = run_main(base + extra, capsys)
        assert code == 2 and len(error_lines(err)) == 1 and message in err, (extra, err)
        assert not (tmp_path / "store").exists()


def test_compress_cli_kl_end_to_end(tmp_path):
    from helpers_cli import calibration_text, tiny_checkpoint
    from typer.testing import CliRunner

    from calderalab.cli import app
    from calderalab.plans import load_plan

    model, calib = tiny_checkpoint(tmp_path, n_layers=4), calibration_text(tmp_path)
    args = ["compress", str(model), "--out", str(tmp_path / "store"), "--plan", "kl", "--bpw", "3.5", "--budget-bits",
            "2,4", "--codebook", "scalar", "--calib", str(calib), "--calib-samples", "4", "--seq-len", "32",
            "--save-plan", str(tmp_path / "plan.json")]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert res.output.count("candidate ") == 2 and "KL plan: " in res.output and "uniform 4b: " in res.output
    plan = load_plan(tmp_path / "plan.json", 4)
    assert plan.preset == "kl" and {s.bits for _, s in plan.items()} == {2, 4}  # a mix, not either uniform
    assert "plan kl hash" in res.output and "0 to do" in res.output

    # the store holds every candidate beside the plan: ppl needs the plan to say which, and says so
    ppl = ["ppl", str(model), "--data", str(calib), "--artifacts", str(tmp_path / "store")]
    res = CliRunner().invoke(app, ppl + ["--plan", str(tmp_path / "plan.json")], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "KL(original" in res.output, res.output + repr(res.exception)
    res = CliRunner().invoke(app, ppl)
    assert res.exit_code != 0 and "several stored specs" in str(res.exception)
