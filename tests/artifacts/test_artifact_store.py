"""ArtifactStore: round trips (local dir, memory://, a real local S3 server), checksums,
resume after a crash, atomic writes, concurrent writers, header checks."""

from __future__ import annotations

import errno
import threading

import pytest
import torch
from safetensors.torch import load as st_load

from calderalab import core
from calderalab.artifacts import ArtifactStore, weight_fingerprint
from calderalab.errors import ArtifactError
from helpers_artifacts import CALIB, MODEL, compress_into, spec
from calderalab.models.tiny import tiny_model


@pytest.fixture
def model():
    return tiny_model("llama", n_layers=3)[0]


def _store(kind, tmp_path, request):
    if kind == "local":
        return ArtifactStore(str(tmp_path / "store"))
    if kind == "memory":
        import uuid

        return ArtifactStore(f"memory://art-{uuid.uuid4().hex}")
    bucket, options = request.getfixturevalue("s3_options")
    return ArtifactStore(f"s3://{bucket}/run1", **options)


@pytest.mark.parametrize("kind", ["local", "memory", "s3"])
def test_round_trip(kind, tmp_path, request, model):
    from calderalab import models

    store = _store(kind, tmp_path, request)
    s = spec()
    compress_into(store, model, s, layers=[0, 2])
    manifest = store.manifest()
    assert len(manifest.modules) == 2 * 7 and manifest.header.model == MODEL
    for (layer, name, key), entry in manifest.modules.items():
        W = models.target_linear(model, layer, name).weight.detach().float()
        assert key == s.key() and entry.shape == tuple(W.shape)
        assert entry.original_fingerprint == weight_fingerprint(W)
        assert entry.file == f"modules/L{layer:03d}.{name}.{key}.safetensors"
        dec = store.load(layer, name, s)
        ref = core.decompose(W, torch.eye(W.shape[1]), s)
        assert torch.equal(dec.reconstruct(), ref.reconstruct())
        assert entry.metrics["bpw"] == pytest.approx(ref.bpw)
        assert entry.metrics["weight_correlation"] > 0.9
        assert entry.metrics["relative_error"] == pytest.approx(ref.relative_error(W, torch.eye(W.shape[1])))
    assert store.has(0, "q", s) and not store.has(1, "q", s) and not store.has(0, "q", spec(bits=3))


def test_file_holds_exactly_the_decomposition_tensors(tmp_path, model):
    """The store adds no widening: the file's tensors are to_tensors() with the same dtypes."""
    from calderalab import models

    store = ArtifactStore(str(tmp_path))
    compress_into(store, model, spec(), layers=[0])
    W = models.target_linear(model, 0, "gate").weight.detach().float()
    want = core.decompose(W, torch.eye(W.shape[1]), spec()).to_tensors()
    got = st_load((tmp_path / store.entry(0, "gate", spec()).file).read_bytes())
    assert set(got) == set(want)
    for key in want:
        assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key
    assert all(t.dtype != torch.int64 for t in got.values())


def test_e8p_store_round_trip(tmp_path, model):
    """An E8P backbone (16-bit codes, scales, no offsets) is stored and loaded back bit for bit."""
    from calderalab import models

    store = ArtifactStore(str(tmp_path))
    s = spec(method="ldlq", bits=2, hadamard=True, codebook="e8p")
    compress_into(store, model, s, layers=[1])
    for name in core.MODULE_NAMES:
        W = models.target_linear(model, 1, name).weight.detach().float()
        ref = core.decompose(W, torch.eye(W.shape[1]), s)
        dec = store.load(1, name, s)
        assert dec.spec == s and torch.equal(dec.reconstruct(), ref.reconstruct())
        assert store.entry(1, name, s).metrics["bpw"] == pytest.approx(core.expected_bpw(s, *W.shape))
    got = st_load((tmp_path / store.entry(1, "up", s).file).read_bytes())
    assert "Q.offset" not in got and got["Q.codes"].dtype == torch.uint8


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupted_file_detected(damage, tmp_path, model):
    store = ArtifactStore(str(tmp_path))
    compress_into(store, model, spec(), layers=[1])
    entry = store.entry(1, "v", spec())
    path = tmp_path / entry.file
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as err:
        store.load(1, "v", spec())
    msg = str(err.value)
    assert entry.file in msg and entry.sha256 in msg and "corrupted" in msg
    import hashlib

    assert hashlib.sha256(bytes(data)).hexdigest() in msg
    store.load(1, "q", spec())  # other modules still load


def test_missing_module_and_missing_store(tmp_path, model):
    with pytest.raises(ArtifactError, match="manifest.json is missing"):
        ArtifactStore(str(tmp_path / "nothing")).manifest()
    store = ArtifactStore(str(tmp_path))
    compress_into(store, model, spec(), layers=[0])
    with pytest.raises(ArtifactError, match=r"module 2\.down .* is not in"):
        store.load(2, "down", spec())
    (tmp_path / store.entry(0, "o", spec()).file).unlink()
    with pytest.raises(ArtifactError, match="L000.o.* is missing"):
        store.load(0, "o", spec())
    assert not store.has(0, "o", spec())


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != "manifest.json"}


@pytest.mark.parametrize("k", [0, 5, 13])
def test_interrupted_run_resumes_to_identical_bytes(k, tmp_path, model):
    clean, crashed = ArtifactStore(str(tmp_path / "clean")), ArtifactStore(str(tmp_path / "crashed"))
    compress_into(clean, model, spec())
    with pytest.raises(RuntimeError, match="simulated crash"):
        compress_into(crashed, model, spec(), stop_after=k)
    assert len(crashed.manifest().modules) == k
    redone = compress_into(crashed, model, spec())
    assert redone == 3 * 7 - k  # finished modules were skipped
    assert _tree(tmp_path / "clean") == _tree(tmp_path / "crashed")
    assert clean.manifest().modules == crashed.manifest().modules


def test_failed_write_leaves_no_partial_file(tmp_path, model, monkeypatch):
    store = ArtifactStore(str(tmp_path))
    compress_into(store, model, spec(), layers=[0])
    from fsspec.implementations.local import LocalFileOpener

    real_write, calls = LocalFileOpener.write, []

    def dying_write(self, data):  # the device fails after the first half of the bytes is written
        calls.append(len(data))
        if len(calls) == 2:
            raise OSError(errno.EIO, "I/O error")
        return real_write(self, data)

    monkeypatch.setattr(LocalFileOpener, "write", dying_write)
    from calderalab import models

    W = models.target_linear(model, 1, "q").weight.detach().float()
    with pytest.raises(OSError, match="I/O error"):
        store.put(1, "q", spec(), core.decompose(W, torch.eye(W.shape[1]), spec()), W)
    files = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(name.startswith("L001.q") or ".tmp-" in name for name in files), files
    assert not store.has(1, "q", spec())
    assert len(store.manifest().modules) == 7  # the earlier modules are intact


def test_concurrent_writers_keep_every_entry(tmp_path, model):
    from calderalab import models

    url = str(tmp_path / "shared")
    ArtifactStore(url).init(MODEL, CALIB)
    errors = []

    def worker(layer):
        try:
            compress_into(ArtifactStore(url), model, spec(), layers=[layer])
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(l,)) for l in range(models.num_layers(model))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert len(ArtifactStore(url).manifest().modules) == 3 * 7


def test_init_refuses_another_model_or_calibration(tmp_path):
    store = ArtifactStore(str(tmp_path))
    first = store.init(MODEL, CALIB)
    assert store.init(MODEL, CALIB) == first  # resuming keeps the original header
    with pytest.raises(ArtifactError, match="holds artifacts of model"):
        store.init({**MODEL, "ref": "other"}, CALIB)
    with pytest.raises(ArtifactError, match="calibration"):
        store.init(MODEL, {**CALIB, "n_samples": 7})


def test_consolidate_writes_merged_manifest(tmp_path, model):
    import json
    import shutil

    store = ArtifactStore(str(tmp_path))
    compress_into(store, model, spec(), layers=[2])
    merged = store.consolidate()
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert len(data["modules"]) == 7 and data["format_version"] == 1 and data["tool_version"]
    shutil.rmtree(tmp_path / "entries")  # a store shipped as manifest.json + modules/ only
    assert store.manifest().modules == merged.modules


def test_format_version_checked(tmp_path):
    import json

    store = ArtifactStore(str(tmp_path))
    store.init(MODEL, CALIB)
    data = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(ArtifactError, match="format_version 99 is not supported"):
        store.header()
