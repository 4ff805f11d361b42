"""compress_model end to end on tiny random models: determinism, resume, refusal, Ray parity."""

from pathlib import Path

import pytest
import torch

from calderalab import core, plans
from calderalab.artifacts import ArtifactStore
from calderalab.calib import CalibData
from calderalab.compress import LayerCompressed, compress_model
from calderalab.errors import ArtifactError
from calderalab.models import tiny_model

SPEC = core.CompressionSpec("caldera", 3, rank=4, outer_iters=2, inner_iters=2)


def calib_data(seed: int = 0) -> CalibData:
    ids = torch.randint(4, 260, (8, 24), generator=torch.Generator().manual_seed(seed))
    return CalibData(ids, "random test tokens", batch_size=4)


def file_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "modules").glob("*.safetensors"))}


def run(model, plan, url, **kw):
    return compress_model(model, plan, ArtifactStore(str(url)), calib_data(), **kw)


def test_compress_writes_every_planned_module_with_metrics(tmp_path):
    model, _ = tiny_model("llama", n_layers=3)
    plan = plans.selective_plan(3, SPEC, "1")
    events = []
    report = run(model, plan, tmp_path / "a", progress=events.append)
    assert {(m.layer, m.module) for m in report.modules} == {(l, n) for l in (0, 2) for n in core.MODULE_NAMES}
    assert [e.layer for e in events if isinstance(e, LayerCompressed)] == [0, 2]
    for m in report.modules:
        assert 0.9 < m.weight_correlation <= 1.0
        assert 0.0 < m.relative_error < 0.5
        assert m.bpw > 3.0
    manifest = ArtifactStore(str(tmp_path / "a")).manifest()
    assert manifest.header.calibration["token_sha256"] == calib_data().sha256
    assert report.plan_hash == plan.hash()


def test_deterministic_bytes_and_resume_after_interrupt(tmp_path):
    model, _ = tiny_model("llama", n_layers=3)
    plan = plans.uniform_plan(3, SPEC)
    run(model, plan, tmp_path / "full")

    class Interrupt(Exception):
        pass

    def stop_after_layer_0(event):
        if isinstance(event, LayerCompressed) and event.layer == 0:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(model, plan, tmp_path / "resumed", progress=stop_after_layer_0)
    partial = file_bytes(tmp_path / "resumed")
    assert 0 < len(partial) < 21
    report = run(model, plan, tmp_path / "resumed")
    assert report.n_resumed == len(partial)
    assert file_bytes(tmp_path / "resumed") == file_bytes(tmp_path / "full")
    # a second run does nothing at all (no calibration needed)
    again = compress_model(model, plan, ArtifactStore(str(tmp_path / "resumed")), calib=None)
    assert again.n_resumed == 21


def test_store_of_another_model_is_refused(tmp_path):
    model_a, _ = tiny_model("llama", n_layers=3, seed=0)
    model_b, _ = tiny_model("llama", n_layers=3, seed=1)
    plan = plans.uniform_plan(3, core.CompressionSpec("rtn", 4))
    run(model_a, plan, tmp_path / "s")
    with pytest.raises(ArtifactError, match=r"module 0\.q made from other weights"):
        run(model_b, plan, tmp_path / "s")


def test_finished_store_of_another_calibration_is_refused(tmp_path):
    """Reuse by store path (benchmarks key stores by spec) must not hand back modules of other tokens."""
    model, _ = tiny_model("llama", n_layers=2)
    plan = plans.uniform_plan(2, core.CompressionSpec("rtn", 4))
    run(model, plan, tmp_path / "s")
    assert run(model, plan, tmp_path / "s").n_resumed == 14  # same tokens: everything reused
    with pytest.raises(ArtifactError, match="with calibration .* use a new store URL"):
        compress_model(model, plan, ArtifactStore(str(tmp_path / "s")), calib_data(seed=1))


def test_bfloat16_hessians_are_recorded_deterministic_and_leave_the_weights(tmp_path):
    """--hessian-dtype bfloat16: other Hessians (so other codes than float32's), the same bytes on a rerun,
    the model's float32 weights decomposed (same fingerprints), and recorded, so a float32 resume is refused."""
    import dataclasses

    model, _ = tiny_model("llama", n_layers=2)
    plan = plans.uniform_plan(2, SPEC)
    fast = dataclasses.replace(calib_data(), hessian_dtype="bfloat16")
    compress_model(model, plan, ArtifactStore(str(tmp_path / "b1")), fast)
    compress_model(model, plan, ArtifactStore(str(tmp_path / "b2")), fast)
    run(model, plan, tmp_path / "f")
    assert file_bytes(tmp_path / "b1") == file_bytes(tmp_path / "b2")
    assert file_bytes(tmp_path / "b1") != file_bytes(tmp_path / "f")
    b16, f32 = (ArtifactStore(str(tmp_path / n)).manifest() for n in ("b1", "f"))
    assert b16.header.calibration["hessian_dtype"] == "bfloat16" and "hessian_dtype" not in f32.header.calibration
    fingerprints = lambda m: {k: e.original_fingerprint for k, e in m.modules.items()}  # noqa: E731
    assert fingerprints(b16) == fingerprints(f32)
    with pytest.raises(ArtifactError, match="with calibration .* use a new store URL"):
        run(model, plan, tmp_path / "b1")


def test_other_families(tmp_path):
    for family in ("qwen2", "gemma"):
        model, _ = tiny_model(family, n_layers=2)
        report = run(model, plans.uniform_plan(2, core.CompressionSpec("ldlq", 4)), tmp_path / family)
        assert len(report.modules) == 14
        assert min(m.weight_correlation for m in report.modules) > 0.95


def test_ray_executor_matches_local_bytes(tmp_path):
    pytest.importorskip("ray")
    model, _ = tiny_model("llama", n_layers=2)
    plan = plans.uniform_plan(2, SPEC)
    run(model, plan, tmp_path / "local")
    run(model, plan, tmp_path / "ray", executor="ray", num_cpus=2)
    assert file_bytes(tmp_path / "ray") == file_bytes(tmp_path / "local")


def _rewrite_entry(root: Path, layer: int, name: str, **fields) -> None:
    import json

    (path,) = (root / "entries").glob(f"L{layer:03d}.{name}.*.json")
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


@pytest.mark.parametrize("field,value,says", [
    ("core_hash", "0" * 64, "stored by core 00000000, this code is "),
    ("tool_version", "0.0.1", "stored by calderalab 0.0.1, this is calderalab "),
    ("threads", 97, "decomposed at 97 intra-op threads, this run uses "),
])
def test_module_stored_by_other_code_is_recomputed_and_unchanged_store_reused(tmp_path, caplog, field, value, says):
    from calderalab.artifacts.provenance import core_code_hash

    model, _ = tiny_model("llama", n_layers=2)
    plan = plans.uniform_plan(2, core.CompressionSpec("rtn", 4))
    run(model, plan, tmp_path / "s")
    before = file_bytes(tmp_path / "s")
    assert run(model, plan, tmp_path / "s").n_resumed == 14  # unchanged store: all reused
    _rewrite_entry(tmp_path / "s", 1, "o", **{field: value})
    store = ArtifactStore(str(tmp_path / "s"))
    assert store.find(1, "o", plan.spec(1, "o")) is not None and not store.has(1, "o", plan.spec(1, "o"))
    with caplog.at_level("WARNING", logger="calderalab.compress"):
        report = run(model, plan, tmp_path / "s")
    assert [(m.layer, m.module) for m in report.modules if not m.resumed] == [(1, "o")]
    assert f"1 module(s) {says}" in caplog.text and caplog.text.rstrip().endswith(": recomputing")
    entry = store.entry(1, "o", plan.spec(1, "o"))
    assert entry.core_hash == core_code_hash() and store.has(1, "o", plan.spec(1, "o"))
    assert entry.threads == torch.get_num_threads()  # the count it was made at, recorded
    assert file_bytes(tmp_path / "s") == before  # same code, same weights: the same bytes again


def test_entry_without_a_recorded_thread_count_is_reused(tmp_path):
    """Stores written before the count was recorded were made at torch's count, which a run without
    --threads uses too: they resume as before."""
    model, _ = tiny_model("llama", n_layers=2)
    plan = plans.uniform_plan(2, core.CompressionSpec("rtn", 4))
    run(model, plan, tmp_path / "s")
    _rewrite_entry(tmp_path / "s", 1, "o", threads=None)
    assert run(model, plan, tmp_path / "s").n_resumed == 14
    assert run(model, plan, tmp_path / "s", threads=97).n_resumed == 1  # only the unrecorded one stays
