"""The one sensitivity pipeline on a tiny random model: providers, outputs, the CLI end to end."""

import subprocess
import sys

import pytest
import torch


class CopiedWeights:
    """A provider whose Ŵ is an exact copy of W: every layer keeps all answers, so no critical zone."""

    def __init__(self):
        self.prepared = None

    def record(self):
        return {"spec_key": "copy"}

    def prepare(self, model, tokenizer, layers):
        from calderalab.models import target_linear
        from calderalab.core import MODULE_NAMES

        self.prepared = list(layers)
        weights = {l: {(l, n): target_linear(model, l, n).weight.detach().clone() for n in MODULE_NAMES} for l in layers}
        return weights.__getitem__, {"learned": True}


def test_profile_prompts_with_a_planted_provider(tmp_path, make_tiny_llama):
    from calderalab.report.sensitivity_report import write_outputs
    from calderalab.sensitivity import SensitivityConfig, SensitivitySettings
    from calderalab.sensitivity.pipeline import profile_prompts

    model = make_tiny_llama(n_layers=4)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, 64, (6,), generator=g).tolist() for _ in range(6)]
    settings = SensitivitySettings(n_samples=6, threshold=0.99, measure=SensitivityConfig(batch_size=3, max_new_tokens=4))
    provider = CopiedWeights()
    run = profile_prompts(model, prompts, settings, provider, layers=[1, 2, 3], record=provider.record())
    assert provider.prepared == [1, 2, 3]
    assert run.profile.fidelity() == {1: 1.0, 2: 1.0, 3: 1.0} and run.zone == ()
    assert run.profile.settings["spec_key"] == "copy" and run.profile.settings["learned"] is True
    paths = write_outputs(run.profile, run.zone, tmp_path)
    assert paths["plot"].read_bytes().startswith(b"\x89PNG") and "Layer Group" in paths["tables"].read_text()


def test_compress_on_the_fly_is_decompose_of_the_original_hessians(make_tiny_llama):
    from calderalab.calib import collect_hessians
    from calderalab.core import CompressionSpec, decompose
    from calderalab.models import target_linear
    from calderalab.sensitivity.pipeline import CompressOnTheFly

    model = make_tiny_llama(n_layers=4)
    batches = [torch.randint(1, 64, (2, 16), generator=torch.Generator().manual_seed(1))]
    spec = CompressionSpec("ldlq", bits=2)
    weights_of, learned = CompressOnTheFly(spec, batches).prepare(model, None, [2])
    H = dict(collect_hessians(model, batches, layers=[2]))[2]["down"]
    want = decompose(target_linear(model, 2, "down").weight.detach().float(), H, spec).reconstruct()
    assert torch.equal(weights_of(2)[(2, "down")], want) and learned == {}
    with pytest.raises(KeyError):
        weights_of(1)  # only the requested layers were compressed


def test_sensitivity_refuses_a_shallow_model_before_any_work(make_tiny_llama):
    from calderalab.sensitivity import SensitivitySettings
    from calderalab.sensitivity.pipeline import run_sensitivity

    provider = CopiedWeights()
    with pytest.raises(ValueError, match="at least 4 layers"):
        run_sensitivity(make_tiny_llama(n_layers=3), None, SensitivitySettings(), provider)
    assert provider.prepared is None


def test_stored_weights_refuses_a_store_of_several_specs(tmp_path):
    from calderalab.errors import CalderalabError
    from calderalab.sensitivity.pipeline import StoredWeights

    class TwoSpecs:
        url = "memory://two"

        def manifest(self):
            from types import SimpleNamespace

            spec = {"method": "ldlq", "bits": 3}
            return SimpleNamespace(modules={(0, "q", "a"): SimpleNamespace(spec=spec),
                                            (0, "k", "b"): SimpleNamespace(spec={**spec, "bits": 4})})

    with pytest.raises(CalderalabError, match="holds 2 compression specs"):
        StoredWeights(TwoSpecs())


# Not slow: the 3.5 min it once took were ~70% self-generated calibration text (16 x 256 sampled
# tokens through generate); a GSM8K text source costs nothing, and the fast path does the rest.
def test_cli_sensitivity_end_to_end(tmp_path, shared_data):
    from calderalab.models import tiny_model

    model, tok = tiny_model("llama", n_layers=4, seed=0)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    out = subprocess.run([sys.executable, "-m", "calderalab", "sensitivity", str(tmp_path / "m"), "--bits", "2", "--rank", "0",
                          "--samples", "4", "--max-new-tokens", "8", "--calib", str(shared_data / "gsm8k" / "train.jsonl"),
                          "--calib-samples", "8", "--out", str(tmp_path / "o"), "--zone-metric", "kl", "--by-family"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for name in ("profile.json", "fidelity.png", "intervals.png", "families.png"):
        assert (tmp_path / "o" / name).is_file(), name
    assert "| Layer Group |" in out.stdout and "timings: " in out.stdout
    assert "zone by kl" in out.stdout and "| age_ordering | 1 |" in out.stdout  # 4 samples: one per family
    assert "no test of whether the groups differ" in out.stdout
    import json

    profile = json.loads((tmp_path / "o" / "profile.json").read_text())
    assert len(profile["rows"]) == 4 and profile["settings"]["fast_path"] and profile["settings"]["max_new_tokens"] == 8
    assert profile["settings"]["calib_source"].endswith("train.jsonl") and "8 windows" in profile["settings"]["calib"]
    assert profile["settings"]["spec"]["method"] == "ldlq" and profile["settings"]["n_samples"] == 4
    assert profile["settings"]["zone_metric"] == "kl" and len(profile["settings"]["sample_categories"]) == 4
    assert len(profile["rows"][0]["metrics"]["per_sample"]["kl_sum"]) == 4


def test_probe_instances_cover_every_family_before_repeating_one():
    from calderalab.eval.tasks import load_families
    from calderalab.sensitivity.pipeline import probe_instances

    n_families = len(load_families())
    instances, _ = probe_instances(n_families + 1)
    families = [inst.family for inst in instances]
    assert len(set(families[:n_families])) == n_families  # each family once, then the second round starts
    assert families[n_families] == families[0]
    assert probe_instances(n_families + 1)[0] == instances  # deterministic
