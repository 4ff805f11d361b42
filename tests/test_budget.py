"""The `budget` plan preset: exact bits, profile-driven choices, options checked before the model loads."""

from __future__ import annotations

import pytest

from calderalab import budget, core
from calderalab.errors import PlanError
from calderalab.sensitivity.profile import LayerRow, RunMetrics, SensitivityProfile

PROFILED = core.CompressionSpec("caldera", 3, rank=4, outer_iters=1, inner_iters=1)
NOISE = RunMetrics(1.0, 0.0, 0.0, 1.0, 8, 40)


def planted_profile(kl: list[float], spec=PROFILED) -> SensitivityProfile:
    """Layer l compressed alone moved the answers by KL kl[l] (noise floor: 0)."""
    rows = tuple(LayerRow.against_noise(l, RunMetrics(1.0 - k, -k, k, 1.0 - k, 8, 40), NOISE) for l, k in enumerate(kl))
    return SensitivityProfile(len(kl), rows, NOISE, {"spec": spec.to_dict()})


def shapes(n_layers: int = 4, d: int = 64) -> dict:
    return {(l, n): ((2 * d, d) if n in ("gate", "up") else (d, 2 * d) if n == "down" else (d, d))
            for l in range(n_layers) for n in core.MODULE_NAMES}


def test_candidates_are_the_profiled_spec_and_the_grid():
    specs = budget.candidate_specs(budget.profiled_spec(planted_profile([0.1] * 4)), budget.BudgetSettings(3.5, bits=(2, 4)))
    assert list(specs) == ["3b-r4", "2b-r0", "2b-r4", "4b-r0", "4b-r4"]
    assert specs["2b-r0"].method == "ldlq" and specs["4b-r4"] == PROFILED.__class__(**{**PROFILED.to_dict(), "bits": 4})


def test_layer_bits_count_every_stored_bit():
    s = shapes()
    want = sum(core.expected_bpw(PROFILED, *s[(1, n)]) * s[(1, n)][0] * s[(1, n)][1] for n in core.MODULE_NAMES)
    assert budget.layer_bits(PROFILED, s, 1) == want
    assert budget.layer_bits(None, s, 1) == 16 * sum(s[(1, n)][0] * s[(1, n)][1] for n in core.MODULE_NAMES)


def test_check_budget_refuses_what_cannot_work():
    profile = planted_profile([0.1] * 4)
    with pytest.raises(PlanError, match=r"--bpw 1 is below the cheapest plan of these options: 2\.\d+ bpw \(2b-r0"):
        budget.check_budget(profile, budget.BudgetSettings(1.0), shapes())
    with pytest.raises(PlanError, match="covers layers"):
        budget.check_budget(planted_profile([0.1] * 3), budget.BudgetSettings(3.5), shapes())
    values = SensitivityProfile.from_values(4, {l: 0.5 for l in range(4)}, {l: 0.0 for l in range(4)}, {"spec": PROFILED.to_dict()})
    with pytest.raises(PlanError, match="no KL"):
        budget.check_budget(values, budget.BudgetSettings(3.5), shapes())
    with pytest.raises(ValueError, match="positive"):
        budget.BudgetSettings(float("nan"))
    with pytest.raises(PlanError, match="not found"):
        budget.load_profile("/no/such/profile.json")


def test_layer_runs_group_consecutive_layers():
    assert budget.layer_runs(["a", "a", "b", "a"]) == [(range(0, 2), "a"), (range(2, 3), "b"), (range(3, 4), "a")]


@pytest.fixture(scope="module")
def compressed_budget(tmp_path_factory, shared_data):
    """A tiny model compressed under a 3.5 bpw budget from a profile where only layer 3 matters."""
    from calderalab.artifacts import ArtifactStore
    from calderalab.calib import CalibConfig, load_calibration
    from calderalab.compress import compress_model
    from calderalab.models import module_shapes, tiny_model

    model, tok = tiny_model("llama", n_layers=4, seed=0, hidden=32)
    store = ArtifactStore(str(tmp_path_factory.mktemp("budget") / "store"))
    calib = load_calibration(model, tok, CalibConfig(str(shared_data / "wikitext-2" / "valid.txt"), n_samples=4, seq_len=32))
    compress = lambda plan: compress_model(model, plan, store, calib)  # noqa: E731
    settings = budget.BudgetSettings(3.5, bits=(2, 3, 4), ranks=(0, 4))
    the_shapes = module_shapes(model)
    chosen = budget.budget_plan(planted_profile([0.001, 0.001, 0.001, 0.5]), settings, the_shapes, compress)
    return chosen, compress(chosen.plan), settings, the_shapes


def test_budget_plan_meets_the_target_and_follows_the_profile(compressed_budget):
    chosen, report, settings, the_shapes = compressed_budget
    assert chosen.bpw.bpw_fp16 <= settings.target_bpw
    # honest: the stored decompositions' own bit counts, kept layers at 16 bits per weight
    stored_bits = sum(m.bpw * m.n_params for m in report.modules) + 16 * chosen.bpw.n_protected_params
    assert stored_bits / chosen.bpw.n_params == pytest.approx(chosen.bpw.bpw_fp16, rel=1e-12)
    assert report.n_resumed == len(report.modules)  # every chosen module was a stored candidate
    assert chosen.uniform is not None and chosen.choice != (chosen.uniform.names[0],) * 4
    bits = {l: budget.layer_bits(chosen.plan.spec(l, "q"), the_shapes, l) for l in range(4)}
    assert bits[3] == max(bits.values()) > min(bits.values())  # the one sensitive layer gets the most bits
    assert chosen.allocation.total_loss < chosen.uniform.total_loss
    assert "| Layers | Option |" in budget.map_table(chosen)
    assert f"target {settings.target_bpw:g}" in budget.summary_line(chosen, settings)


def test_compress_cli_refuses_bad_budget_options_before_loading(tmp_path, capsys):
    from helpers_cli import error_lines, run_main, tiny_checkpoint

    model = tiny_checkpoint(tmp_path, n_layers=4)
    profile = planted_profile([0.1] * 4).save(tmp_path / "profile.json")
    base = ["compress", str(model), "--out", str(tmp_path / "store"), "--plan", "budget"]
    for extra, message in ((["--bpw", "1.0", "--profile", str(profile)], "below the cheapest plan"),
                           (["--bpw", "3.5", "--profile", str(tmp_path / "none.json")], "not found"),
                           (["--bpw", "3.5"], "needs --bpw"),
                           (["--bpw", "3.5", "--profile", str(profile), "--bits", "3"], "drop --bits"),
                           (["--bpw", "3.5", "--profile", str(profile), "--budget-bits", "2,x"], "comma-separated")):
        code, out, err = run_main(base + extra, capsys)
        assert code == 2 and len(error_lines(err)) == 1 and message in err, (extra, err)
        assert "loaded" not in out and not (tmp_path / "store").exists()


def test_compress_cli_budget_end_to_end(tmp_path):
    from helpers_cli import calibration_text, tiny_checkpoint
    from typer.testing import CliRunner

    from calderalab.cli import app
    from calderalab.plans import load_plan

    model, calib = tiny_checkpoint(tmp_path, n_layers=4), calibration_text(tmp_path)
    profile = planted_profile([0.001, 0.001, 0.001, 0.5]).save(tmp_path / "profile.json")
    args = ["compress", str(model), "--out", str(tmp_path / "store"), "--plan", "budget", "--bpw", "3.5", "--profile",
            str(profile), "--budget-bits", "2,4", "--budget-ranks", "0,4", "--calib", str(calib), "--calib-samples", "4", "--seq-len", "32",
            "--save-plan", str(tmp_path / "plan.json")]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "| Layers | Option |" in res.output and "budget plan: " in res.output and "(target 3.5;" in res.output
    assert res.output.count("candidate ") == 5  # the profiled 3b-r4, then 2 and 4 bits x ranks 0 and 4
    plan = load_plan(tmp_path / "plan.json", 4)
    assert plan.preset == "budget" and "plan budget hash" in res.output and "0 to do" in res.output
