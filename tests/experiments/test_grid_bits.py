"""The grid with fractional bit widths, and 2-bit selective end to end, on a tiny random model with a
planted evaluator (execution passes iff the last layer keeps its original weights)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers_experiments import planted_results, small_config


@pytest.fixture(scope="module")
def wide_tiny():
    """Hidden 128: a row's fp16 scale + offset costs 0.25 bpw, so 2-bit uniform stores ~2.2 and a
    2.5 target has room to raise some modules (hidden 64 would leave almost none)."""
    from calderalab.models import tiny_model

    return tiny_model("llama", n_layers=4, hidden=128)


def last_layer_evaluator(model0):
    from calderalab.models import num_layers, target_linear

    last = num_layers(model0) - 1
    original = target_linear(model0, last, "down").weight.detach().clone()

    def evaluate(model, tokenizer, instances, config, progress=None):
        executed = torch.equal(target_linear(model, last, "down").weight, original)
        return planted_results(instances, config, executed)

    return evaluate


def _config(out, shared_data, rank=0):
    cfg = small_config(str(out), str(shared_data / "wikitext-2" / "valid.txt"), generate_canonical=False,
                       ladder_per_step=0)
    return dataclasses.replace(cfg, compress=cfg.compress.with_options(rank=rank))


@pytest.fixture(scope="module")
def grid_session(wide_tiny, tmp_path_factory, shared_data):
    """A rank-0 (LDLQ) session whose store the grid fills; the profile test then reuses it."""
    from calderalab.experiments import Session

    cfg = _config(tmp_path_factory.mktemp("grid"), shared_data)
    return Session.open(cfg.run, cfg.compress, cfg.eval, "grid", last_layer_evaluator(wide_tiny[0]),
                        model_and_tokenizer=wide_tiny)


def test_grid_with_fractional_bits_reports_honest_bpw_per_row(grid_session):
    from calderalab.experiments import grid
    from calderalab.fractional import parse_bit_widths
    from calderalab.models import module_shapes

    session = grid_session
    result = grid(session, bits=parse_bit_widths("2,2.5,3"), protect="3")
    (note, runs), = result.runs.items()
    assert [r.label for r in runs] == ["Baseline", "2-bit uniform", "2-bit selective (3)", "2.5-bit mixed",
                                       "2.5-bit mixed selective (3)", "3-bit uniform", "3-bit selective (3)"]
    assert [r.bits for r in runs] == ["-", "2", "2", "2.5", "2.5", "3", "3"]
    assert [r.n_executed == r.n for r in runs] == [True, False, True, False, True, False, True]
    bpw = result.data["bpw"]
    assert bpw["2-bit uniform"] < bpw["2.5-bit mixed"] <= 2.5 < bpw["3-bit uniform"]
    # honest: the stored decompositions' own bit counts (every module of the mix is in the store)
    shapes = module_shapes(session.model)
    for label in ("2-bit uniform", "2.5-bit mixed"):
        report = session.compress(_plan(session, label, shapes))
        stored = sum(m.bpw * m.n_params for m in report.modules) / sum(m.n_params for m in report.modules)
        assert report.n_resumed == len(report.modules) and stored == pytest.approx(bpw[label], rel=1e-12)
    table = result.sections[0].body
    assert "| Bitwidth | bpw (honest) | Config |" in table
    assert f"| 2.5 | {bpw['2.5-bit mixed']:.3f} | 2.5-bit mixed |" in table
    assert set(result.plots) == {note}


def _plan(session, label, shapes):
    from fractions import Fraction

    from calderalab.experiments.protection import grid_plan

    return grid_plan(session, Fraction(label.split("-bit")[0]), shapes)


def test_grid_with_a_profile_raises_the_layer_it_measured_as_sensitive(grid_session):
    """The planted profile says layer 1 matters (the rule would favour layers 2 and 3 and v/down first):
    the budget allocator raises all of layer 1, from errors of artifacts the grid already stored."""
    from fractions import Fraction

    from calderalab.experiments.protection import grid_plan
    from calderalab.models import module_shapes
    from calderalab.sensitivity.profile import LayerRow, RunMetrics, SensitivityProfile

    session = grid_session
    noise = RunMetrics(1.0, 0.0, 0.0, 1.0, 8, 40)
    kl = [0.001, 0.5, 0.001, 0.001]
    rows = tuple(LayerRow.against_noise(l, RunMetrics(1.0 - k, -k, k, 1.0 - k, 8, 40), noise) for l, k in enumerate(kl))
    profile = SensitivityProfile(4, rows, noise, {"spec": session.compress_settings.spec(2).to_dict()})
    shapes = module_shapes(session.model)
    plan = grid_plan(session, Fraction(5, 2), shapes, profile)
    assert [plan.spec(1, n).bits for n in ("q", "k", "v", "o", "gate", "up", "down")] == [3] * 7
    assert plan.hash() != grid_plan(session, Fraction(5, 2), shapes).hash()


def test_two_bit_study_protects_a_depth_control_not_every_layer(wide_tiny, tmp_path, shared_data):
    """At 2 bits every layer of the random model alone loses its answers; the study used to protect
    all of them ("selective" = the baseline). Now the protected set is the depth control."""
    from calderalab.experiments import study

    cfg = _config(tmp_path, shared_data, rank=4)
    cfg = dataclasses.replace(cfg, compress=cfg.compress.with_options(bits=2))
    out = study(cfg, evaluator=last_layer_evaluator(wide_tiny[0]), model_and_tokenizer=wide_tiny)
    assert out.zone_source == "saturated" and out.zone == (3,)
    (note, runs), = out.result.runs.items()
    assert [r.label for r in runs] == ["Baseline", "2-bit uniform", "2-bit depth control"]
    assert [r.protected for r in runs] == ["All", "None", "3"]
    assert [r.n_executed == r.n for r in runs] == [True, False, True]
    assert out.paths["report"].read_text().count("**Every measured layer fell below fidelity 15%**") == 1
