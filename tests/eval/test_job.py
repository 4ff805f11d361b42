"""Evaluation pieces that need no probe runner: instance building (eval.suite), fingerprint and applying
artifacts (eval.target)."""

import re

import pytest
import torch

from calderalab import core
from calderalab.artifacts import ArtifactStore
from calderalab.eval.runner import EvalConfig
from calderalab.eval.suite import EvalSettings, build_instances, experiment_passes
from calderalab.eval.target import apply_stored, model_fingerprint
from calderalab.models import num_layers, target_linear, tiny_model


def test_canonical_and_generated_instances():
    canon = build_instances(EvalSettings(suite="canonical"))
    assert [i.answer for i in canon] == ["15", "4:15 PM", "1168", "3", "6.3", "D<C<B<A", "9:30 AM"]
    default = EvalSettings()  # 5 per family over seeds 0, 1, 2: enough for a ±5-point interval
    assert (default.suite, default.n, default.seeds, default.scoring) == ("goodhart", 5, (0, 1, 2), "choice")
    gen = build_instances(EvalSettings(n=2, seeds=(0, 1)))
    n_families = len({i.family for i in gen})
    assert n_families >= 23 and len(gen) == 2 * 2 * n_families and len({i.uid for i in gen}) == len(gen)
    assert {i.seed for i in gen} == {0, 1}
    per_family = {}
    for i in gen:
        per_family[i.family] = per_family.get(i.family, 0) + 1
    assert set(per_family.values()) == {4}  # n per family and seed
    assert gen == build_instances(EvalSettings(n=2, seeds=(0, 1)))  # deterministic
    assert EvalSettings(suite="canonical").instance_seeds == (0,)


def test_gsm8k_instances_from_jsonl_path(shared_data):
    settings = EvalSettings(suite="gsm8k", decoding=EvalConfig(scoring="generate"), n=5, seeds=(0, 1),
                            data_path=str(shared_data / "gsm8k" / "test.jsonl"))
    insts = build_instances(settings)
    assert 5 < len(insts) <= 10 and all(i.family == "gsm8k" and i.plan_options == () for i in insts)


def test_fingerprint_and_apply_with_protect(tmp_path):
    model, _ = tiny_model("llama", n_layers=3, seed=0, with_tokenizer=False)
    fresh, _ = tiny_model("llama", n_layers=3, seed=0, with_tokenizer=False)
    other, _ = tiny_model("llama", n_layers=3, seed=1, with_tokenizer=False)
    fp = model_fingerprint(model)
    assert re.fullmatch(r"[0-9a-f]{64}", fp) and fp == model_fingerprint(fresh) != model_fingerprint(other)

    spec = core.CompressionSpec(method="rtn", bits=3)
    store = ArtifactStore(str(tmp_path / "store"))
    store.init({"ref": "tiny-llama", "revision": "seed0"}, {"dataset": "none"})
    for layer in range(num_layers(model)):
        for name in core.MODULE_NAMES:
            W = target_linear(model, layer, name).weight.detach().float()
            H = torch.eye(W.shape[1])
            store.put(layer, name, spec, core.decompose(W, H, spec), W, H)
    applied = apply_stored(model, str(tmp_path / "store"), protect="last:1")
    manifest_hash, protected, summary = applied.manifest_hash, applied.protected, applied.summary
    assert manifest_hash == store.manifest().content_hash() and re.fullmatch(r"[0-9a-f]{64}", manifest_hash)
    assert protected == (2,)
    assert summary["n_modules_compressed"] == 14 and summary["bits"] == "3"
    assert 3.0 < summary["mean_bpw_compressed"] < 4.0  # 3-bit codes plus per-row scales
    assert torch.equal(target_linear(model, 2, "q").weight, target_linear(fresh, 2, "q").weight)
    assert not torch.equal(target_linear(model, 0, "q").weight, target_linear(fresh, 0, "q").weight)
    assert model_fingerprint(model) != fp


FAMILIES = ("discount_coupon", "time_duration", "transitive_order")


def test_experiment_passes_main_suite_ladder_and_generated_canonical():
    settings = EvalSettings(n=1, seeds=(0,), canonical_first=True, ladder_per_step=1, generate_canonical=True,
                            families=FAMILIES)
    passes = experiment_passes(settings)
    assert [(p.suite, p.scoring) for p, _ in passes] == [("goodhart", "choice"), ("ladder", "choice"),
                                                        ("canonical", "generate")]
    (main, suite), (ladder, rungs), (canonical, seven) = passes
    # n = 1 with canonical_first: each chosen family's first instance is its canonical assignment
    assert sorted(i.family for i in suite) == sorted(FAMILIES) and all(i.canonical for i in suite)
    assert [i.answer for i in suite] == [i.answer for i in seven]
    assert canonical.instance_seeds == (0,) and all(i.canonical for i in seven)
    # the ladder: one instance per ladder and step count k = 1..6
    steps = sorted({i.n_steps for i in rungs})
    assert steps == [1, 2, 3, 4, 5, 6] and len(rungs) == 6 * len({i.family.rsplit("_k", 1)[0] for i in rungs})
    assert rungs == build_instances(EvalSettings(suite="ladder", n=1, seeds=(0,)))
    assert main.ladder_per_step == 0 and not main.generate_canonical  # a pass is one suite


def test_generated_canonical_pass_is_skipped_when_the_main_suite_already_is_it():
    settings = EvalSettings(n=1, seeds=(0,), canonical_first=True, generate_canonical=True, families=FAMILIES,
                            decoding=EvalConfig(scoring="generate"))
    assert [p.suite for p, _ in experiment_passes(settings)] == ["goodhart"]


def test_unknown_family_is_named():
    with pytest.raises(ValueError, match=r"unknown task families \['nope'\]"):
        build_instances(EvalSettings(families=("nope",)))
