"""eval.job pieces that need no probe runner: instance building, fingerprint, applying artifacts."""

import re

import pytest
import torch

from calderalab import core
from calderalab.artifacts import ArtifactStore
from calderalab.eval.job import EvalJob, _apply, build_instances, model_fingerprint
from calderalab.models import num_layers, target_linear, tiny_model


def test_canonical_and_generated_instances():
    canon = build_instances(EvalJob("smollm2", suite="canonical"))
    assert [i.answer for i in canon] == ["15", "4:15 PM", "1168", "3", "6.3", "D<C<B<A", "9:30 AM"]
    default = EvalJob("smollm2")  # 5 per family over seeds 0, 1, 2: enough for a ±5-point interval
    assert (default.suite, default.n, default.seeds, default.scoring) == ("goodhart", 5, (0, 1, 2), "choice")
    gen = build_instances(EvalJob("smollm2", n=2, seeds=(0, 1)))
    n_families = len({i.family for i in gen})
    assert n_families >= 23 and len(gen) == 2 * 2 * n_families and len({i.uid for i in gen}) == len(gen)
    assert {i.seed for i in gen} == {0, 1}
    per_family = {}
    for i in gen:
        per_family[i.family] = per_family.get(i.family, 0) + 1
    assert set(per_family.values()) == {4}  # n per family and seed
    assert gen == build_instances(EvalJob("smollm2", n=2, seeds=(0, 1)))  # deterministic
    assert EvalJob("smollm2", suite="canonical").instance_seeds == (0,)


def test_gsm8k_instances_from_jsonl_path(shared_data):
    job = EvalJob("smollm2", suite="gsm8k", scoring="generate", n=5, seeds=(0, 1),
                  data_path=str(shared_data / "gsm8k" / "test.jsonl"))
    insts = build_instances(job)
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
    job = EvalJob("tiny", artifacts=str(tmp_path / "store"), protect="last:1")
    manifest_hash, protected, summary = _apply(job, model)
    assert re.fullmatch(r"[0-9a-f]{64}", manifest_hash) and protected == (2,)
    assert summary["n_modules_compressed"] == 14 and summary["bits"] == "3"
    assert 3.0 < summary["mean_bpw_compressed"] < 4.0  # 3-bit codes plus per-row scales
    assert torch.equal(target_linear(model, 2, "q").weight, target_linear(fresh, 2, "q").weight)
    assert not torch.equal(target_linear(model, 0, "q").weight, target_linear(fresh, 0, "q").weight)
    assert model_fingerprint(model) != fp
