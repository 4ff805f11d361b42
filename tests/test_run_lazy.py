"""Sensitivity and evaluation of a lazily opened checkpoint (`--load layers`: decoder layers read from
the safetensors shards as each forward reaches them) against the same model fully in memory: the same
profile and the same stored outcomes, at most two decoder layers in memory at once, every layer
released after."""

from pathlib import Path

import pytest
import torch
from helpers_cli import sharded_checkpoint

from calderalab import core, plans
from calderalab.artifacts import ArtifactStore
from calderalab.calib import CalibData
from calderalab.compress import compress_model
from calderalab.models import load_model, open_to_run
from calderalab.models.lazy import layer_weights

N_LAYERS = 4  # the sensitivity groups need four
SPEC = core.CompressionSpec("ldlq", 2)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    return sharded_checkpoint(tmp_path_factory.mktemp("lazyrun"), N_LAYERS, seed=5)


@pytest.fixture(scope="module")
def store(sharded, tmp_path_factory) -> str:
    url = str(tmp_path_factory.mktemp("lazyrun") / "store")
    eager, _ = load_model(str(sharded))
    ids = torch.randint(4, 260, (8, 24), generator=torch.Generator().manual_seed(0))
    compress_model(eager, plans.uniform_plan(N_LAYERS, SPEC), ArtifactStore(url), CalibData(ids, "random", batch_size=4),
                   model_ref="tiny")
    return url


def all_released(model) -> bool:
    reader = layer_weights(model)
    return reader.n_loaded == 0 and all(p.is_meta for p in model.model.layers.parameters())


def profile(model, tokenizer, provider):
    from calderalab.sensitivity import SensitivityConfig, SensitivitySettings
    from calderalab.sensitivity.pipeline import run_sensitivity

    settings = SensitivitySettings(n_samples=6, measure=SensitivityConfig(batch_size=3, max_new_tokens=5))
    return run_sensitivity(model, tokenizer, settings, provider).profile


def test_open_to_run_modes(sharded):
    assert layer_weights(open_to_run(str(sharded), load="layers")[0]) is not None
    assert layer_weights(open_to_run(str(sharded), load="memory")[0]) is None
    assert layer_weights(open_to_run(str(sharded), load="auto")[0]) is None  # a few kB: memory
    with pytest.raises(ValueError, match="--load must be one of auto, memory, layers"):
        open_to_run(str(sharded), load="disk")


@pytest.mark.parametrize("source", ["compress", "store"])
def test_lazy_sensitivity_equals_eager(sharded, store, source, tmp_path):
    from calderalab.artifacts.preflight import open_for_model
    from calderalab.sensitivity.pipeline import CompressOnTheFly, StoredWeights

    def provider(offload_dir=None):
        if source == "store":
            return StoredWeights(open_for_model(store, str(sharded)))
        batches = [torch.randint(4, 260, (4, 16), generator=torch.Generator().manual_seed(2))]
        return CompressOnTheFly(SPEC, batches, offload_dir)

    eager = profile(*load_model(str(sharded)), provider())
    lazy, tok = open_to_run(str(sharded), load="layers")
    got = profile(lazy, tok, provider(str(tmp_path / "spill")))  # the activations also spilled to disk
    assert got.rows == eager.rows and got.noise == eager.noise
    assert any(row.metrics.kl > 0 for row in got.rows)  # the compressed layers did change the answers' log-probs
    reader = layer_weights(lazy)
    assert reader.peak_loaded == 1  # the swapped layer is persisted and read back when the pass reaches it
    assert all_released(lazy)


def test_lazy_evaluation_stores_the_eager_run(sharded, store, tmp_path):
    from calderalab.eval.suite import EvalSettings
    from calderalab.experiments.evaluation import EvalJob, run_eval_job
    from calderalab.results import ResultsDB

    db = tmp_path / "runs.sqlite"
    runs = {}
    for load in ("memory", "layers"):
        job = EvalJob(str(sharded), EvalSettings(suite="canonical"), artifacts=store, protect="1", load=load, label=load)
        runs[load] = run_eval_job(job, db)
    (eager_id, eager), (lazy_id, lazy) = runs["memory"], runs["layers"]
    assert lazy.outcomes == eager.outcomes
    with ResultsDB(db) as results:
        a, b = results.get_run(eager_id).record, results.get_run(lazy_id).record
        assert results.outcomes(eager_id) == results.outcomes(lazy_id)
    assert a.model_fingerprint == b.model_fingerprint and a.artifacts_manifest_hash == b.artifacts_manifest_hash
    assert b.protected_layers == (1,)


def test_lazy_apply_persists_compressed_layers_and_a_failure_applies_nothing(sharded, store, tmp_path):
    from calderalab.artifacts import apply_artifacts
    from calderalab.errors import ArtifactError
    from calderalab.models import discover_layers, onloaded

    eager, _ = load_model(str(sharded))
    apply_artifacts(eager, ArtifactStore(store), protect=[2])
    lazy, _ = open_to_run(str(sharded), load="layers")
    apply_artifacts(lazy, ArtifactStore(store), protect=[2])
    assert all_released(lazy)
    for t_eager, t_lazy in zip(discover_layers(eager), discover_layers(lazy)):
        with onloaded(lazy, t_lazy):  # read back from the persisted files (layer 2: the checkpoint)
            for (name, p), (_, q) in zip(t_eager.layer.named_parameters(), t_lazy.layer.named_parameters()):
                assert torch.equal(p, q), name

    import shutil

    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    entry = max(ArtifactStore(str(copy)).manifest().modules.values(), key=lambda e: (e.layer, e.module))
    (copy / entry.file).write_bytes(b"flipped")  # found only after the earlier layers were persisted
    fresh, _ = open_to_run(str(sharded), load="layers")
    before = layer_weights(fresh).index
    with pytest.raises(ArtifactError):
        apply_artifacts(fresh, ArtifactStore(str(copy)))
    assert layer_weights(fresh).index is before  # the persisted layers are forgotten: the checkpoint's weights again


def test_eval_and_sensitivity_commands_run_with_load_layers(sharded, store, tmp_path, shared_data):
    from typer.testing import CliRunner

    from calderalab.cli import app
    from calderalab.results import ResultsDB

    db = tmp_path / "runs.sqlite"
    result = CliRunner().invoke(app, ["eval", str(sharded), "--canonical", "--artifacts", store, "--load", "layers",
                                      "--db", str(db)])
    assert result.exit_code == 0, result.output
    with ResultsDB(db) as results:
        assert len(results.list_runs()) == 1
    result = CliRunner().invoke(app, ["sensitivity", str(sharded), "--artifacts", store, "--samples", "4",
                                      "--max-new-tokens", "4", "--load", "layers", "--out", str(tmp_path / "sens")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sens" / "profile.json").is_file()


def test_a_pass_stopped_by_a_hook_or_an_error_leaves_no_layer_loaded(sharded):
    lazy, _ = open_to_run(str(sharded), load="layers")
    layers = lazy.model.layers
    ids = torch.arange(4, 20).reshape(1, 16)

    class Stop(Exception):
        pass

    def stop(*_args):
        raise Stop

    for hook in (layers[2].register_forward_pre_hook(stop), layers[1].mlp.register_forward_hook(stop)):
        with pytest.raises(Stop), torch.no_grad():
            lazy(input_ids=ids)
        hook.remove()
        assert all_released(lazy)


def test_lazy_swap_over_every_layer_holds_one_and_restores(sharded):
    from calderalab.core import MODULE_NAMES
    from calderalab.models import swapped_weights, target_linear

    eager, _ = load_model(str(sharded))
    lazy, _ = open_to_run(str(sharded), load="layers")
    gen = torch.Generator().manual_seed(1)
    mapping = {(l, n): torch.randn(target_linear(eager, l, n).weight.shape, generator=gen) * 0.05
               for l in range(N_LAYERS) for n in MODULE_NAMES}
    ids = torch.arange(4, 20).reshape(1, 16)
    with torch.no_grad():
        before = lazy(input_ids=ids).logits
        with swapped_weights(eager, mapping), swapped_weights(lazy, mapping):
            assert torch.equal(lazy(input_ids=ids).logits, eager(input_ids=ids).logits)
            inner = {(0, "q"): torch.zeros_like(mapping[(0, "q")])}
            with swapped_weights(eager, inner), swapped_weights(lazy, inner):
                assert torch.equal(lazy(input_ids=ids).logits, eager(input_ids=ids).logits)
            assert torch.equal(lazy(input_ids=ids).logits, eager(input_ids=ids).logits)  # the outer swap again
        assert torch.equal(lazy(input_ids=ids).logits, before)
    assert layer_weights(lazy).peak_loaded == 1 and all_released(lazy)
    with pytest.raises(ValueError, match="expected"):
        with swapped_weights(lazy, {(1, "q"): torch.zeros(3, 3)}):
            pass


def test_ppl_and_activations_with_load_layers_print_what_memory_prints(sharded, store, tmp_path, shared_data):
    from typer.testing import CliRunner

    from calderalab.cli import app

    text = shared_data / "wikitext-2" / "valid.txt"
    out = {}
    for load in ("memory", "layers"):
        ppl = CliRunner().invoke(app, ["ppl", str(sharded), "--data", str(text), "--max-tokens", "600", "--context", "128",
                                       "--stride", "64", "--artifacts", store, "--load", load,
                                       "--reference-cache", str(tmp_path / f"ref-{load}")])
        assert ppl.exit_code == 0, ppl.output
        drift = CliRunner().invoke(app, ["activations", str(sharded), "--artifacts", store, "--protect", "2-3",
                                         "--samples", "2", "--load", load, "--out", str(tmp_path / f"act-{load}")])
        assert drift.exit_code == 0, drift.output
        printed = ppl.output[ppl.output.index("perplexity "):].strip()  # after transformers' loading bar
        out[load] = (printed, (tmp_path / f"act-{load}" / "drift.md").read_text())
    assert out["layers"] == out["memory"] and "\nKL(original" in out["memory"][0]


def test_study_settings_refuse_an_unknown_load_mode():
    from calderalab.experiments.config import RunSettings

    assert RunSettings(load="layers").load == "layers"
    with pytest.raises(ValueError, match="--load must be one of auto, memory, layers, got 'swap'"):
        RunSettings(load="swap")
