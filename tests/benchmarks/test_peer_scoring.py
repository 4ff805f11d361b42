"""benchmarks/peers.py scores planted peers on a tiny model: a peer that hands back the original weights
(it "knows the answer") must score KL 0 and beat calderalab's verdict, a peer that hands back broken
weights must score far from the original and lose it, and a peer whose output misses a tensor is
refused. The scoring path is the one every real peer row goes through (`measure_state` -> `row_from`
-> `peer_table.leads`)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture()
def peers(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("peers")


@pytest.fixture()
def scored(tmp_path):
    from calderalab.eval.fidelity import load_or_build_reference
    from calderalab.models import tiny_model

    model, _ = tiny_model("llama", n_layers=2, seed=0)
    ids = torch.randint(1, 64, (4 * 32,), generator=torch.Generator().manual_seed(0))
    reference = load_or_build_reference(model, ids, 32, 32, tmp_path)
    return model, reference, ids


def decoder_weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith("model.layers.") and k.endswith("proj.weight")}


def test_planted_peers_score_as_planted_and_the_verdicts_follow(peers, scored):
    model, reference, ids = scored
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    oracle = decoder_weights(model)
    broken = {k: v + torch.randn(v.shape, generator=gen) * v.std() * 2 for k, v in oracle.items()}
    fields = dict(bits="3", group="64", rank="-", version="planted 0", seconds=1.0, bpw=3.5)
    rows = {}
    for name, state in (("oracle", oracle), ("broken", broken)):
        result = peers.measure_state(model, state, reference, ids)
        rows[name] = peers.row_from(result, method=name, series=f"{name} g64", **fields)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # the original is back
    assert rows["oracle"].kl == 0 and rows["oracle"].top1 == 1 and rows["oracle"].ppl_ratio == pytest.approx(1)
    assert rows["broken"].kl_lo > 0.05 and rows["broken"].top1 < 0.9

    ours = peers.Row(method="ldlq", series="ldlq row", bits="3", group="row", rank="-", version="calderalab 0.1",
                     bpw=3.05, ppl=1.0, ppl_ratio=1.0, kl=0.02, kl_lo=0.015, kl_hi=0.025, top1=0.95, seconds=1.0)
    verdicts = {v.split(" ")[0]: v for v in peers.leads([ours, rows["oracle"], rows["broken"]])}
    assert "does NOT lead" in verdicts["oracle"] and "calderalab leads" in verdicts["broken"]


def test_a_peer_output_missing_a_tensor_is_refused(peers, scored):
    model, reference, ids = scored
    state = decoder_weights(model)
    state.pop(next(iter(state)))
    with pytest.raises(ValueError, match="does not match the model"):
        peers.measure_state(model, state, reference, ids)


def test_a_tuned_row_scores_its_own_store_and_is_cached(peers, tmp_path, monkeypatch):
    """`--tune-steps`: on the planted tuning problem (tests/tune/planted_tune.py: KL 0 is reachable with
    Q frozen) the "+tune" row must score the tuned store (far below its source), keep the source's bpw,
    come from the cache on a rerun, and be left out under --cached-only when never run."""
    import argparse

    from calderalab import models
    from calderalab.artifacts import assemble_weights
    from calderalab.eval.fidelity import load_or_build_reference, measure_against

    monkeypatch.syspath_prepend(str(BENCHMARKS.parent / "tests" / "tune"))
    from planted_tune import planted_setup

    model, _, store, calib, heldout, _ = planted_setup(tmp_path)
    ids = heldout[: 8 * 32]
    reference = load_or_build_reference(model, ids, 32, 32, tmp_path / "reference")
    with models.swapped_weights(model, assemble_weights(store, model)):
        source_result = measure_against(model, reference, ids)
    source = peers.row_from(source_result, method="caldera", series="s", bits="2", group="row", rank="4", version="v",
                            bpw=2.5, seconds=1.0)
    store_dir = Path(store.url)
    timings = peers.Timings(tmp_path / "timings.json")
    timings.put(store_dir.name, 1.0)
    timings.put("hessians", 1.0)
    fields = dict(method="caldera", series="caldera r4 row", bits="2", group="row", rank="4", version="v")
    args = argparse.Namespace(tune_steps=48, tune_lr="1e-2", cached_only=False)
    assert peers.tune_lrs(args) == [1e-2]
    row, result = peers.tuned_row(args, 1e-2, model, calib, reference, ids, store_dir, 2.5, timings, 2.0, fields)
    assert row.method == "caldera +tune lr 0.01" and row.bpw == 2.5 and not row.failure
    assert row.kl < 0.5 * source.kl and row.seconds > 2.0
    line = peers.tuning_line("caldera r4 row", source_result, result)
    assert line.endswith(": lower") and "lower in" in line
    assert peers.tuning_line("same", source_result, source_result).endswith("no change shown")
    plot = tmp_path / "tuning.png"
    peers.tuning_windows_plot([("caldera r4 row +tune", source_result, result)], str(plot), "planted")
    assert plot.stat().st_size > 0

    def no_tuning(*_args, **_kwargs):
        raise AssertionError("a cached tuned row was tuned again")
    monkeypatch.setattr(peers, "tune_store", no_tuning)
    assert peers.tuned_row(args, 1e-2, model, calib, reference, ids, store_dir, 2.5, timings, 2.0, fields)[0].kl == row.kl
    other = argparse.Namespace(tune_steps=48, tune_lr=None, cached_only=True)  # another setting: its own key
    assert peers.tune_lrs(other) == [peers.TuneConfig().lr]
    assert peers.tuned_row(other, 2e-2, model, calib, reference, ids, store_dir, 2.5, timings, 2.0, fields) is None


def test_kl_plan_rows_meet_their_target_and_come_from_the_cache(peers, tmp_path, monkeypatch, shared_data):
    """`--kl-plans`: the row's store is the KL plan (bits per module under the target), scored like every
    row; a rerun only resumes stores and re-reads the Fisher, and --cached-only reads the same row back."""
    import argparse

    from calderalab import models
    from calderalab.artifacts import ArtifactStore, assemble_weights
    from calderalab.calib import CalibConfig, load_calibration
    from calderalab.eval.fidelity import load_or_build_reference, measure_against
    from calderalab.models import tiny_model

    model, tok = tiny_model("llama", n_layers=2, seed=0)
    calib = load_calibration(model, tok, CalibConfig(str(shared_data / "wikitext-2" / "valid.txt"), n_samples=4, seq_len=32))
    ids = torch.randint(1, 64, (4 * 32,), generator=torch.Generator().manual_seed(0))
    reference = load_or_build_reference(model, ids, 32, 32, tmp_path / "reference")
    timings = peers.Timings(tmp_path / "timings.json")
    args = argparse.Namespace(kl_plans="3.5", cached_only=False, tune_steps=0, tune_kl_plans="", margin=0.0)
    cached_args = lambda plans: argparse.Namespace(kl_plans=plans, cached_only=True, tune_steps=0, tune_kl_plans="",  # noqa: E731
                                                   margin=0.0)
    [row], lines, [store], tunings = peers.kl_plan_rows(args, model, calib, reference, ids, tmp_path, timings)
    assert tunings == []
    assert lines == []  # no uniform candidate was scored
    bits = peers.plan_bits(store)
    assert len(bits) == 14 and set(bits.values()) <= {2, 3, 4, 5, 6, 8}
    plot = peers.bits_map_plot({"KL plan 3.5": bits}, tmp_path / "plans.png")
    assert plot.stat().st_size > 0
    assert row.method == "ldlq kl-plan" and row.bits == "3.5" and 3.0 < row.bpw <= 3.5 and row.seconds > 0
    assert 0 < row.kl and not row.failure
    [record] = (tmp_path / "calderalab").glob("*-klplan-3.5-*.json")
    assert sum(json.loads(record.read_text())["mix"].values()) == 14  # every module has one candidate

    real_compress, real_fisher = peers.compress_model, peers.fisher.output_sensitivity

    def resume_only(*a, **k):
        report = real_compress(*a, **k)
        assert report.n_resumed == len(report.modules), "a cached KL plan row was compressed again"
        return report

    def no_fisher(*_args, **_kwargs):
        raise AssertionError("the cached Fisher was measured again")
    monkeypatch.setattr(peers, "compress_model", resume_only)
    monkeypatch.setattr(peers.fisher, "output_sensitivity", no_fisher)
    resumed = peers.kl_plan_rows(args, model, calib, reference, ids, tmp_path, timings)[0]
    cached = peers.kl_plan_rows(cached_args("3.5"), model, calib, reference, ids,
                                tmp_path, timings)[0]
    assert resumed == cached == [row]
    assert peers.kl_plan_rows(cached_args("4.2"), model, calib, reference, ids,
                              tmp_path, timings) == ([], [], [], [])

    # once the uniform candidate under the plan is scored, the row is paired with it
    uniform = next(p for p in (tmp_path / "calderalab").iterdir() if p.name.endswith("ldlq-b3-grow-h1-d0.01-s0-e8p"))
    with models.swapped_weights(model, assemble_weights(ArtifactStore(str(uniform)), model)):
        peers.cached_result(uniform.parent / f"{uniform.name}-score-{reference.key[:16]}.json",
                            lambda: measure_against(model, reference, ids))
    [line] = peers.kl_plan_rows(args, model, calib, reference, ids, tmp_path, timings)[1]
    assert line.startswith("KL plan 3.5 (3.") and "against uniform ldlq-b3-grow-h1-d0.01-s0-e8p (3." in line

    # --tune-rank16: the plan store tuned through a 16-bit part, its bits counted, paired with its source and
    # with the untuned plan at or under its bpw
    monkeypatch.setattr(peers, "compress_model", real_compress)  # a new target (4) is compressed and measured
    monkeypatch.setattr(peers.fisher, "output_sensitivity", real_fisher)
    tuned_args = argparse.Namespace(kl_plans="3.5,4.5", cached_only=False, tune_steps=2, tune_lr="1e-2", tune_rank16=2, margin=0.0,
                                    tune_kl_plans="3.5")
    rows, lines, _, [(label, source, tuned_result)] = peers.kl_plan_rows(tuned_args, model, calib, reference, ids,
                                                                         tmp_path, timings)
    plain, tuned, above = rows
    assert tuned.method == "ldlq kl-plan +tune r16 2 lr 0.01" and tuned.bits == "3.5" and not tuned.failure
    extra = 16 * 2 * sum(m + n for m, n in models.module_shapes(model).values())
    n_params = sum(m * n for m, n in models.module_shapes(model).values())
    assert tuned.bpw == pytest.approx(plain.bpw + extra / n_params, rel=1e-9) and tuned.seconds > plain.seconds
    assert peers.tuning_line(label, source, tuned_result).startswith("tuning ldlq kl-plan +tune r16 2 lr 0.01 3.5: KL")
    assert tuned_result.window_kl != source.window_kl and source.kl_interval()[0] == pytest.approx(plain.kl, abs=1e-12)
    assert above.bits == "4.5" and above.bpw > tuned.bpw  # so the tuned 3.5 plan is paired with it
    assert any(line.startswith(f"ldlq kl-plan +tune r16 2 lr 0.01 3.5 ({tuned.bpw:.3f} bpw) against KL plan 4.5 "
                               f"({above.bpw:.3f} bpw)") for line in lines), lines
    with pytest.raises(ValueError, match="not among --kl-plans"):
        peers.kl_plan_rows(argparse.Namespace(**{**vars(tuned_args), "tune_kl_plans": "3"}), model, calib, reference,
                           ids, tmp_path, timings)


def test_run_tag_names_and_separates_non_default_runs(peers):
    """A row decomposed under another executor, thread count or Hessian dtype is its own series and store (its
    time and last bits differ); the default keeps the names every earlier run cached under."""
    assert peers.run_tag(peers.parse_args([])) == ("", "")
    assert peers.run_tag(peers.parse_args(["--executor", "ray", "--threads", "1"])) == (" [ray t1]", "-ray-t1")
    assert peers.run_tag(peers.parse_args(["--threads", "2"])) == (" [local t2]", "-local-t2")
    assert peers.run_tag(peers.parse_args(["--hessian-dtype", "bfloat16"])) == (" [H bfloat16]", "-H-bfloat16")
    assert peers.run_tag(peers.parse_args(["--threads", "1", "--hessian-dtype", "bfloat16"])) == (
        " [local t1, H bfloat16]", "-local-t1-H-bfloat16")


def test_pair_reads_two_scored_stores_and_calls_only_the_planted_change(peers, scored, tmp_path):
    """--pair on the score files a table run leaves: the original's weights scored twice (KL 0 both)
    show no change; a store whose weights were perturbed scores higher against it; and a name with no
    score file is refused with the stores that have one."""
    import argparse

    model, reference, ids = scored
    state = decoder_weights(model)
    noisy = {k: v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1)) for k, v in state.items()}
    root = tmp_path / "cache" / "calderalab"
    for name, weights in (("exact", state), ("exact-again", state), ("noisy", noisy)):
        peers.cached_result(root / f"{name}-score-{reference.key[:16]}.json",
                            lambda w=weights: peers.measure_state(model, w, reference, ids))
    args = lambda base, other, margin=0.0: argparse.Namespace(cache=str(tmp_path / "cache"), pair=[base, other], margin=margin)  # noqa: E731
    assert peers.pair(args("exact", "exact-again")).endswith("no change shown")
    line = peers.pair(args("exact", "noisy"))
    assert line.startswith("noisy against exact: KL +") and line.endswith(": higher")
    assert peers.pair(args("exact", "noisy", margin=10.0)).endswith("no change shown beyond the run-to-run margin ±10.0000")
    with pytest.raises(SystemExit, match="'gone': no score files of that store .* scored stores: exact, exact-again, noisy"):
        peers.pair(args("exact", "gone"))
