"""The experiment and eval commands check their options before any weights load, in one error line,
and their defaults are the library's (one decoding default for `eval` and the study)."""

from __future__ import annotations

import pytest
from helpers_cli import error_lines, run_main, tiny_checkpoint

from calderalab.eval.runner import EvalConfig
from calderalab.eval.suite import EvalSettings

BAD = [
    (["ablate", "--protect-layers", "last:2", "--bits", "9"], "error: bits=9 must be an integer in 2..8"),
    (["sweep", "--seeds", "0,x"], "error: --seeds must be comma-separated integers like 0,1,2, got '0,x'"),
    (["grid", "--bits", "2,9"], "error: --bits: 9 is outside 2..8 (b_Q is 2 to 8 bits; a fractional value mixes the "
                                "two whole bit widths around it)"),
    (["grid", "--bits", "1.2,2.5"], "error: --bits: 1.2 is outside 2..8 (b_Q is 2 to 8 bits; a fractional value mixes "
                                    "the two whole bit widths around it)"),
    (["grid", "--bits", "2,2.5x"], "error: --bits: '2.5x' is not a number; give bit widths like 2,2.5,3"),
    (["grid", "--plans", "uniform,mixed"], "error: grid plans must be among uniform, selective; got ['uniform', 'mixed']"),
    (["study", "--scoring", "vote"], "error: scoring must be one of choice, cloze, generate, got 'vote'"),
    (["min-protect", "--n-per-family", "0"], "error: n must be > 0 (--n, --n-per-family), got 0"),
    (["sweep", "--protect", ";"], "error: --protect names no protection set: give e.g. 'last:5,last:3' or '23,24;last:3'"),
    (["eval", "smollm2", "--seeds", "1,1"], "error: --seeds must be distinct integers, got [1, 1]"),
    (["eval", "smollm2", "--canonical", "--ladder"], "error: pick one of --canonical, --ladder and --suite"),
]


@pytest.fixture
def no_weights(monkeypatch):
    from calderalab import models

    def load_model(*args, **kwargs):
        raise AssertionError("weights were loaded before the bad option was refused")

    monkeypatch.setattr(models, "load_model", load_model)


@pytest.mark.parametrize("argv, error", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_option_fails_before_the_model_loads(argv, error, tmp_path, capsys, no_weights):
    out = ["--out", str(tmp_path / "out")] if argv[0] != "eval" else ["--db", str(tmp_path / "r.sqlite")]
    code, stdout, stderr = run_main([*argv, *out], capsys)
    assert code == 2 and "Traceback" not in stdout + stderr
    assert error_lines(stderr) == [error]
    assert not (tmp_path / "out").exists() and not (tmp_path / "r.sqlite").exists()


def test_protection_set_outside_the_model_fails_on_its_skeleton(tmp_path, capsys, no_weights):
    model = tiny_checkpoint(tmp_path)  # 3 layers
    code, _, stderr = run_main(["ablate", str(model), "--protect-layers", "7", "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and error_lines(stderr) == ["error: layer 7 out of range in '7': model has 3 layers (0-2)"]


def test_fractional_bits_below_their_floor_fail_on_the_skeleton(tmp_path, capsys, no_weights):
    model = tiny_checkpoint(tmp_path)  # hidden 32: a row's fp16 scale + offset alone cost about 1 bpw
    base = ["grid", str(model), "--rank", "0", "--out", str(tmp_path / "out")]
    code, _, stderr = run_main([*base, "--bits", "2.25"], capsys)
    assert code == 2 and len(error_lines(stderr)) == 1
    assert error_lines(stderr)[0].startswith("error: --bits 2.25 is below 2-bit uniform's own honest bpw, ")
    assert error_lines(stderr)[0].endswith("(scales and seeds counted): raise it, or use 2")
    code, _, stderr = run_main([*base, "--bits", "3", "--profile", str(tmp_path / "none.json")], capsys)
    assert code == 2 and "profile file" in stderr and "not found" in stderr
    assert not (tmp_path / "out").exists()


def test_eval_and_the_study_decode_with_the_same_defaults():
    from calderalab.experiments import EXPERIMENT_EVAL, StudyConfig
    from calderalab.experiments.options import eval_job, study_config

    assert EvalSettings().decoding == EXPERIMENT_EVAL.decoding == StudyConfig().eval.decoding == EvalConfig()
    assert eval_job("smollm2").settings.decoding == study_config().eval.decoding == EvalConfig()
    assert study_config() == StudyConfig()  # no option given: every default is the settings' own


def test_options_merge_into_the_settings():
    from calderalab.experiments import EXPERIMENT_EVAL
    from calderalab.experiments.options import eval_job, protection_sets, study_config

    config = study_config(bits=4, scoring="cloze", seeds="1,2", n_per_family=2, samples=8, out="o", generate_canonical=True)
    assert (config.compress.base.bits, config.eval.scoring, config.eval.seeds, config.eval.n) == (4, "cloze", (1, 2), 2)
    assert (config.sensitivity.n_samples, config.run.out, config.eval.generate_canonical) == (8, "o", True)
    assert config.eval.ladder_per_step == EXPERIMENT_EVAL.ladder_per_step
    job = eval_job("m", ladder=True, n=2, scoring="generate", batch_size=3, tasks_dirs=["t"])
    assert (job.settings.suite, job.settings.n, job.settings.tasks_dirs) == ("ladder", 2, ("t",))
    assert (job.settings.decoding.scoring, job.settings.decoding.batch_size) == ("generate", 3)
    assert protection_sets("23,24;last:3") == ["23,24", "last:3"]
    assert protection_sets("last:5,last:3") == ["last:5", "last:3"]
    assert protection_sets(None) == ["last:10", "last:5", "last:3", "last:1"]

