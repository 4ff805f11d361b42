"""Test helpers for the CLI under faults: a tiny checkpoint on disk, a compress command, the CLI as a user runs it."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

import calderalab
from calderalab.artifacts import ArtifactStore

SRC = str(Path(calderalab.__file__).resolve().parents[1])  # put first on a subprocess's PYTHONPATH
N_LAYERS = 3
N_MODULES = N_LAYERS * 7


def tiny_checkpoint(root: Path, seed: int = 0, n_layers: int = N_LAYERS) -> Path:
    """A seeded tiny Llama (32 wide) saved as a local model directory: a valid MODEL argument."""
    from calderalab.models import export_checkpoint, tiny_model

    model, tokenizer = tiny_model("llama", n_layers=n_layers, seed=seed, hidden=32)
    path = root / f"model-{seed}-{n_layers}"
    export_checkpoint(model, tokenizer, path)
    return path


def sharded_checkpoint(root: Path, n_layers: int, seed: int) -> Path:
    """A seeded tiny Llama saved as sharded safetensors (a few tensors per shard, so layers are split
    across shards) with its tokenizer: what a lazily opened checkpoint is tested on."""
    from calderalab.models import tiny_model, tiny_tokenizer

    model, _ = tiny_model("llama", n_layers=n_layers, seed=seed)
    path = root / "model"
    model.save_pretrained(path, max_shard_size="40KB")
    tiny_tokenizer().save_pretrained(path)
    return path


def calibration_text(root: Path) -> Path:
    """A small seeded word salad: enough bytes for 4 windows of 32 byte-level tokens."""
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "ran", "far", "away", "from", "home"]
    path = root / "calib.txt"
    path.write_text(" ".join(rng.choice(words) for _ in range(800)))
    return path


def compress_args(model: Path, calib: Path, out: Path | str) -> list[str]:
    """`calderalab compress` at 4-bit LDLQ on 4 calibration windows: a second or two of work. One
    decomposition thread (`--threads 1`), as in the killed subprocesses (OMP_NUM_THREADS=1): a resume
    reuses only modules made at its own count, so the runs whose bytes are compared share it."""
    return ["compress", str(model), "--bits", "4", "--calib", str(calib), "--calib-samples", "4", "--seq-len", "32",
            "--threads", "1", "--out", str(out)]


def start_killed(argv: list[str], fault: str, extra_env: dict[str, str] | None = None,
                 base_env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m calderalab ARGV` in a subprocess that SIGKILLs itself at `fault` (calderalab.faults);
    its environment is `base_env` (default: this process's) updated with `extra_env`."""
    base = dict(os.environ) if base_env is None else base_env
    env = {**base, **(extra_env or {}), "CALDERALAB_FAULT": fault, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "calderalab", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def run_main(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Run `calderalab ARGV` through cli.main (its error handling included): (exit code, stdout, stderr).

    An exception escaping main() is what the user would see as a traceback: the test fails on it.
    """
    from calderalab.cli import main

    capsys.readouterr()
    with mock.patch.object(sys, "argv", ["calderalab", *argv]):
        try:
            main()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except Exception as err:  # noqa: BLE001 - reported as the traceback a user would get
            pytest.fail(f"`calderalab {' '.join(argv)}` ends in a traceback: {type(err).__name__}: {err}")
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def temp_files(store: Path) -> list[Path]:
    return sorted(store.rglob(".tmp-*"))


def readable_modules(store: Path) -> int:
    """How many modules a reader of the store sees; each one's file is checksum-verified."""
    if not (store / "manifest.json").exists():
        return 0
    s = ArtifactStore(str(store))
    manifest = s.manifest()
    for entry in manifest.modules.values():
        s.read_verified(entry)
    return len(manifest.modules)


def assert_same_artifacts(got_store: Path, want_store: Path) -> None:
    """Every module file and entry byte-identical; manifest.json equal but for its creation time."""
    got, want = files(got_store), files(want_store)
    assert sorted(got) == sorted(want)
    for name in want:
        if name != "manifest.json":
            assert got[name] == want[name], name
    header = lambda data: {k: v for k, v in json.loads(data).items() if k != "created"}  # noqa: E731
    assert header(got["manifest.json"]) == header(want["manifest.json"])
