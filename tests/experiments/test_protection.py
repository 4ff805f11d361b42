"""Experiment wiring with a planted evaluator: the outcome of each protection set is known, so
min-protect must find the planted k; ablation must reuse artifacts (no decompose calls)."""

from __future__ import annotations

import pytest
import torch

from helpers_experiments import planted_results, small_config


def planted_evaluator(originals: dict[int, torch.Tensor], needed_tail: int, calls: list[int]):
    """Executes every instance iff the last `needed_tail` layers hold their original weights
    (read from the model itself, so the wiring from plan to swapped weights is what is tested)."""
    from calderalab.models import target_linear

    def evaluate(model, tokenizer, instances, config, progress=None):
        n = len(originals)
        intact = [torch.equal(target_linear(model, l, "q").weight, originals[l]) for l in range(n)]
        k = 0
        while k < n and intact[n - 1 - k]:
            k += 1
        calls.append(k)
        executed = k >= needed_tail
        return planted_results(instances, config, executed)

    return evaluate


def _session(tiny, tmp_path, shared_data, evaluator, experiment, artifacts=None):
    from calderalab.experiments import Session

    # one pass (the main suite): the planted evaluator's call list counts configurations
    cfg = small_config(str(tmp_path), str(shared_data / "wikitext-2" / "valid.txt"), artifacts, generate_canonical=False,
                       ladder_per_step=0)
    return Session.open(cfg.run, cfg.compress, cfg.eval, experiment, evaluator, model_and_tokenizer=tiny)


@pytest.fixture(scope="module")
def store(tiny, shared_data, tmp_path_factory):
    """Uniform 3-bit artifacts of the tiny model, compressed once for the module's tests."""
    from calderalab.plans import uniform_plan

    session = _session(tiny, tmp_path_factory.mktemp("store"), shared_data, None, "setup")
    session.compress(uniform_plan(4, session.compress_settings.spec()))
    return session.store.url


def _originals(model):
    from calderalab.models import num_layers, target_linear

    return {l: target_linear(model, l, "q").weight.detach().clone() for l in range(num_layers(model))}


@pytest.mark.parametrize("needed", [1, 3])
def test_min_protect_finds_planted_tail(tiny, tmp_path, shared_data, store, needed):
    """3 instances: only a wide margin can be shown (identical outcomes bound the drop at 47 points)."""
    from calderalab.experiments import min_protect

    calls: list[int] = []
    session = _session(tiny, tmp_path, shared_data, planted_evaluator(_originals(tiny[0]), needed, calls), "min-protect", store)
    result = min_protect(session, margin=0.6)
    assert result.data["k"] == needed
    assert result.data["protected"] == list(range(4 - needed, 4))
    assert result.data["boundary_verified"] and result.data["margin"] == 0.6
    assert calls[0] == 4  # the baseline ran with every layer original
    text = result.sections[0].body
    assert f"the last **{needed}** layer(s) pass the non-inferiority margin 60.0 points" in text
    bound = result.data["upper_bounds"][needed]
    assert f"bound {100 * bound:.1f} points (drop 0.0 points)" in text and bound < 0.6
    assert "3 instances; this margin needs about 2 " in text  # Nam 1997, no discordance: z²(1 − 0.6)/0.6 = 1.8
    assert "McNemar p" in text and "| Non-inferior (bound < 60) |" in text


def test_min_protect_says_plainly_when_no_tail_passes(tiny, tmp_path, shared_data, store):
    from calderalab.eval.noninferiority import noninferiority_sample_size
    from calderalab.experiments import min_protect

    session = _session(tiny, tmp_path, shared_data, planted_evaluator(_originals(tiny[0]), 1, []), "min-protect", store)
    result = min_protect(session)  # default margin: 5 points, far below what 3 instances can show
    assert result.data["k"] is None and result.data["protected"] == [] and result.data["margin"] == 0.05
    text = result.sections[0].body
    assert text.startswith("**No protected tail passes** the non-inferiority margin 5.0 points")
    assert "Closest: the last 4 layer(s) (every layer: the baseline's own weights)" in text
    assert "Minimum protection: the last" not in text
    assert f"3 instances; this margin needs about {noninferiority_sample_size(0.0, 0.05)} " in text
    assert all(row.endswith("| no |") for row in text.splitlines() if row.startswith("| ") and row[2].isdigit())


def test_ablation_reuses_artifacts_and_runs(tiny, tmp_path, shared_data, monkeypatch):
    from calderalab import executors
    from calderalab.experiments import ablate

    calls: list[int] = []
    evaluator = planted_evaluator(_originals(tiny[0]), 2, calls)
    session = _session(tiny, tmp_path, shared_data, evaluator, "ablate")
    first = ablate(session, ["last:2", "0"])
    n_decomposed = {"n": 0}
    real = executors.run_job

    def counting(job, threads):
        n_decomposed["n"] += 1
        return real(job, threads)

    monkeypatch.setattr(executors, "run_job", counting)
    # a new protection set on the same artifacts: assembled, never recompressed
    second = ablate(_session(tiny, tmp_path, shared_data, evaluator, "ablate"), ["last:2", "last:1"])
    assert n_decomposed["n"] == 0
    assert calls == [4, 0, 2, 0, 1]  # baseline, uniform, last:2, layer 0, then only the new set last:1
    (note, runs), = second.runs.items()
    assert [r.label for r in runs] == ["Baseline", "3-bit uniform", "3-bit protect 2-3", "3-bit protect 3"]
    assert [r.n_executed == r.n for r in runs] == [True, False, True, False]
    assert [r.protected for r in runs] == ["All", "None", "2-3", "3"]
    assert first.runs[note][2].outcomes == runs[2].outcomes


def test_sweep_writes_report_with_plot(tiny, tmp_path, shared_data, store):
    from calderalab.experiments import finish, sweep

    session = _session(tiny, tmp_path, shared_data, planted_evaluator(_originals(tiny[0]), 2, []), "sweep", store)
    result = sweep(session, ["last:3", "last:1"])
    paths = finish(session, result, {"protect": ["last:3", "last:1"]})
    text = paths["report"].read_text()
    assert "| Test | Expected | Baseline | 3-bit uniform | 3-bit protect 1-3 | 3-bit protect 3 |" in text
    assert all(p.stat().st_size > 1000 for p in result.plots.values())
    assert (tmp_path / "manifest.json").exists()


def test_report_from_db_tables_and_plot(tiny, tmp_path, shared_data, store):
    from calderalab.experiments import sweep
    from calderalab.report.run_report import report_from_db

    session = _session(tiny, tmp_path, shared_data, planted_evaluator(_originals(tiny[0]), 2, []), "sweep", store)
    sweep(session, ["last:3", "last:1"])
    paths = report_from_db(session.run.db_path, ["1", "2", "3", "4"], tmp_path / "rep")
    text = paths["report"].read_text()
    assert "| Config | Protected | Understanding | Execution | Gaps |" in text
    assert "McNemar p" in text and "Per-test breakdown" in text
    assert paths["plot protected"].exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report_from_db(tmp_path / "nope.sqlite", ["1"], tmp_path / "rep2")


def test_bad_settings_name_the_value():
    from calderalab.experiments import CompressSettings, SensitivitySettings
    from calderalab.experiments.options import study_config

    with pytest.raises(ValueError, match=r"bits=9 must be an integer in 2..8"):
        CompressSettings().with_options(bits=9)
    with pytest.raises(ValueError, match="neither .self. nor an existing file"):
        CompressSettings().with_options(calib_source="/no/such/file.txt")
    with pytest.raises(ValueError, match="scoring must be"):
        study_config(scoring="vote")
    with pytest.raises(ValueError, match="threshold must be in"):
        SensitivitySettings(threshold=0.0)
