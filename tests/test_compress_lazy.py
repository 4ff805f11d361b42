"""Compression of a lazily opened checkpoint (decoder layers read from safetensors shards one at a
time) against the same model fully in memory: identical artifacts, one layer at a time, resume,
activations spilled to disk."""

from pathlib import Path

import pytest
import torch
from helpers_cli import sharded_checkpoint

from calderalab import core, plans
from calderalab.artifacts import ArtifactStore
from calderalab.calib import CalibData, collect_hessians
from calderalab.compress import compress_model
from calderalab.models import load_model, open_model, tiny_model
from calderalab.models.lazy import layer_weights, onloaded

SPEC = core.CompressionSpec("caldera", 3, rank=4, outer_iters=2, inner_iters=2)
N_LAYERS = 3
MODEL_REF = "tiny-sharded"  # the store header's model record, the same for both runs


def calib_data() -> CalibData:
    ids = torch.randint(4, 260, (8, 24), generator=torch.Generator().manual_seed(0))
    return CalibData(ids, "random test tokens", batch_size=4)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    """A seeded tiny Llama saved as sharded safetensors (a few tensors per shard)."""
    path = sharded_checkpoint(tmp_path_factory.mktemp("sharded"), N_LAYERS, seed=3)
    assert len(list(path.glob("*.safetensors"))) > N_LAYERS  # layers are split across shards
    return path


def store_files(root: Path) -> dict[str, bytes]:
    """Every artifact file's bytes but the manifest header (it records the creation time)."""
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    files.pop("manifest.json")
    return files


def compress(model, url: Path, **kw):
    return compress_model(model, plans.uniform_plan(N_LAYERS, SPEC), ArtifactStore(str(url)), calib_data(),
                          model_ref=MODEL_REF, **kw)


def test_open_model_keeps_decoder_layers_on_meta(sharded):
    model, _ = open_model(str(sharded))
    reader = layer_weights(model)
    assert reader is not None and reader.n_loaded == 0
    assert all(p.is_meta for p in model.model.layers.parameters())
    assert not any(p.is_meta for n, p in model.named_parameters() if ".layers." not in n)


def test_lazy_artifacts_equal_eager_bytes_and_one_layer_at_a_time(sharded, tmp_path):
    eager, _ = load_model(str(sharded))
    compress(eager, tmp_path / "eager")
    lazy, _ = open_model(str(sharded))
    report = compress(lazy, tmp_path / "lazy")
    assert len(report.modules) == N_LAYERS * 7
    assert store_files(tmp_path / "lazy") == store_files(tmp_path / "eager")
    reader = layer_weights(lazy)
    assert (reader.peak_loaded, reader.n_loaded, reader.n_reads) == (1, 0, N_LAYERS)
    assert all(p.is_meta for p in lazy.model.layers.parameters())  # every layer released after use


def test_lazy_bfloat16_hessians_equal_eager_bytes(sharded, tmp_path):
    """--hessian-dtype bfloat16 on a lazily opened model: its bfloat16 twin of each layer runs the copied
    weights (not the streamed forward of the float32 original, which a copy shares), as an eager run does."""
    import dataclasses

    fast = dataclasses.replace(calib_data(), hessian_dtype="bfloat16")
    eager, _ = load_model(str(sharded))
    compress_model(eager, plans.uniform_plan(N_LAYERS, SPEC), ArtifactStore(str(tmp_path / "eager")), fast, model_ref=MODEL_REF)
    lazy, _ = open_model(str(sharded))
    compress_model(lazy, plans.uniform_plan(N_LAYERS, SPEC), ArtifactStore(str(tmp_path / "lazy")), fast, model_ref=MODEL_REF)
    assert store_files(tmp_path / "lazy") == store_files(tmp_path / "eager")
    assert layer_weights(lazy).peak_loaded == 1


def test_onloaded_layer_equals_eager_weights(sharded):
    from calderalab.models import discover_layers

    eager, _ = load_model(str(sharded))
    lazy, _ = open_model(str(sharded))
    for t_eager, t_lazy in zip(discover_layers(eager), discover_layers(lazy)):
        with onloaded(lazy, t_lazy):
            for (name, p), (_, q) in zip(t_eager.layer.named_parameters(), t_lazy.layer.named_parameters()):
                assert torch.equal(p, q), name


def test_lazy_resume_checks_only_stored_layers(sharded, tmp_path):
    lazy, _ = open_model(str(sharded))
    plan = plans.selective_plan(N_LAYERS, SPEC, "2")  # layers 0 and 1
    compress_model(lazy, plan, ArtifactStore(str(tmp_path / "s")), calib_data(), model_ref=MODEL_REF)
    again, _ = open_model(str(sharded))
    report = compress(again, tmp_path / "s")
    assert report.n_resumed == 14
    assert layer_weights(again).peak_loaded == 1


def test_offload_dir_round_trip_gives_the_same_hessians(tmp_path):
    model, _ = tiny_model("llama", n_layers=N_LAYERS, seed=1)
    batches = calib_data().batches
    in_memory = dict(collect_hessians(model, batches))
    seen = []
    for layer, Hs in collect_hessians(model, batches, offload_dir=str(tmp_path / "spill")):
        seen.append(len(list((tmp_path / "spill").rglob("*.pt"))))
        for name, H in Hs.items():
            assert torch.equal(H, in_memory[layer][name]), (layer, name)
    assert seen == [len(batches)] * N_LAYERS  # one file per batch: the next layer's inputs, on disk
    assert not list((tmp_path / "spill").rglob("*.pt"))  # cleaned up


def test_offload_dir_compress_bytes_equal(sharded, tmp_path):
    lazy, _ = open_model(str(sharded))
    compress(lazy, tmp_path / "plain")
    lazy, _ = open_model(str(sharded))
    compress(lazy, tmp_path / "spilled", offload_dir=str(tmp_path / "spill"))
    assert store_files(tmp_path / "spilled") == store_files(tmp_path / "plain")


def test_a_lazy_forward_gives_the_eager_logits_one_layer_at_a_time(sharded):
    eager, _ = load_model(str(sharded))
    lazy, _ = open_model(str(sharded))
    ids = torch.arange(4, 36).reshape(2, 16)
    with torch.no_grad():
        first, again = lazy(input_ids=ids).logits, lazy(input_ids=ids).logits
        want = eager(input_ids=ids).logits
    assert torch.equal(first, want) and torch.equal(again, want)
    reader = layer_weights(lazy)
    assert (reader.peak_loaded, reader.n_loaded, reader.n_reads) == (1, 0, 2 * N_LAYERS)


def test_only_layer_reads_get_their_own_mappings(sharded, tmp_path, monkeypatch):
    """glibc's mmap threshold is low (every layer tensor its own mapping, freed to the system) only
    while a layer is read, and the compute threshold otherwise: with every MiB-sized temporary a fresh
    mapping a SmolLM2 compression ran 297 s instead of 182 s, a third of it in the kernel."""
    from calderalab.models import lazy

    calls = []
    monkeypatch.setattr(lazy, "_mallopt", lambda threshold: calls.append(threshold) or True)
    read_then_compute = [lazy.MMAP_THRESHOLD_READ, lazy.MMAP_THRESHOLD_COMPUTE]
    model, _ = open_model(str(sharded))
    assert calls[0] == lazy.MMAP_THRESHOLD_COMPUTE  # pinned on open, then the embeddings' read
    assert len(calls) >= 3 and calls[1:] == read_then_compute * ((len(calls) - 1) // 2)
    calls.clear()
    compress(model, tmp_path / "mapped")
    reads = calls.count(lazy.MMAP_THRESHOLD_READ)
    assert reads >= N_LAYERS and calls == read_then_compute * reads
    monkeypatch.setattr(lazy, "_pinned", False)
    calls.clear()
    compress(model, tmp_path / "unpinned")
    assert calls == []  # no glibc (or never pinned): reads leave the allocator alone
