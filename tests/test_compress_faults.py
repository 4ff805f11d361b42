"""Real crashes of a real compression: SIGKILL at chosen points, then resume to identical bytes.

A `python -m calderalab compress` subprocess on a tiny 3-layer Llama (saved to a temp dir) is
killed with a real SIGKILL by the fault hook (calderalab/faults.py, CALDERALAB_FAULT=POINT:N) at
a deterministic point: during Hessian capture, mid-decomposition, halfway through writing a
module file, halfway through writing manifest.json or an entry sidecar. Then:
1. the store as the crash left it reads back with only whole modules (checksums verified; the
   half-written temp file is there on disk, and no reader touches it);
2. the same command again, without the variable, finishes the job; every module file and entry
   is byte-identical to an uninterrupted run's, manifest.json differs at most in its creation
   time, and no temp file is left.
Work per layer (in order): capture layer l, decompose its 7 modules, then store layer l-1.
LDLQ at 4 bits on a 32-wide model: the interpreter start-up is most of each run's cost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_cli import (N_MODULES, assert_same_artifacts, calibration_text, compress_args, readable_modules,
                         temp_files, tiny_checkpoint)
from typer.testing import CliRunner

import calderalab
from calderalab.cli import app

SRC = str(Path(calderalab.__file__).resolve().parents[1])

# (fault, modules whole after the kill, the half-written temp file's folder or None)
CASES = [
    ("hessian:3", 7, None),  # capturing layer 2: layer 0 stored, layer 1 decomposed in memory
    ("decompose:17", 7, None),  # layer 2's 3rd module: layer 0 stored, layer 1 not yet
    ("module_write:10", 9, "modules"),  # layer 1's 3rd module file half written
    ("manifest_write:12", 10, "entries"),  # header + 10 entries whole; the 11th entry half written
    ("manifest_write:1", 0, "."),  # the store header itself half written
]


def _start_killed(argv: list[str], fault: str) -> subprocess.Popen:
    env = {**os.environ, "CALDERALAB_FAULT": fault, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "calderalab", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """(args builder, reference store, {fault: crashed store}).

    One `compress` subprocess per fault, all started at once (the interpreter start-up dominates,
    so they overlap), one thread each; meanwhile the uninterrupted reference run, in this process
    with its default threads (so the byte comparison also spans thread counts).
    """
    root = tmp_path_factory.mktemp("faults")
    model, calib = tiny_checkpoint(root), calibration_text(root)
    args = lambda out: compress_args(model, calib, out)  # noqa: E731
    stores = {fault: root / f"store-{i}" for i, (fault, _, _) in enumerate(CASES)}
    procs = {fault: _start_killed(args(out), fault) for fault, out in stores.items()}
    reference = root / "reference"
    result = CliRunner().invoke(app, args(reference))
    assert result.exit_code == 0, result.output + repr(result.exception)
    for fault, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, f"not killed at {fault}: rc {proc.returncode}\n{err[-2000:]}"
    return args, reference, stores


@pytest.mark.parametrize("fault, n_whole, temp_dir", CASES, ids=[c[0] for c in CASES])
def test_kill_then_resume_gives_identical_artifacts(crashed, fault, n_whole, temp_dir):
    args, reference, stores = crashed
    out = stores[fault]
    temps = temp_files(out)
    if temp_dir is None:
        assert temps == []
    else:
        (temp,) = temps
        assert temp.parent == out / temp_dir
        final_name = temp.name.split("-", 4)[-1]  # .tmp-<pid>-<host>-<random>-<name>
        whole = (reference / temp_dir / final_name).read_bytes()
        assert temp.read_bytes() == whole[: len(whole) // 2]  # really half on disk
    assert readable_modules(out) == n_whole

    result = CliRunner().invoke(app, args(out))
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"{n_whole} already stored" in result.output
    assert temp_files(out) == []  # the dead writer's temp file was removed
    assert_same_artifacts(out, reference)
    assert readable_modules(out) == N_MODULES


def test_fault_spec_is_checked():
    from calderalab import faults

    assert faults.parse("module_write:2") == ("module_write", 2)
    for bad in ("module_write", "module_write:0", "disk:1", "hessian:x"):
        with pytest.raises(ValueError, match="CALDERALAB_FAULT"):
            faults.parse(bad)
