"""A full disk during `compress`: the store stays consistent, the user gets one line naming the
store and the space needed, and after space is freed the same command resumes to identical bytes.

Two disks: a real 64 KiB tmpfs (when this process may mount one: root with CAP_SYS_ADMIN), and
everywhere an injected ENOSPC (fsspec's local file write raises it once a byte budget is spent,
the way a nearly full disk behaves: the write that crosses the line fails part-way).
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from pathlib import Path

import pytest
from fsspec.implementations.local import LocalFileOpener
from helpers_cli import (N_MODULES, assert_same_artifacts, compress_args, error_lines, files, readable_modules,
                         run_main, temp_files)

from calderalab.errors import format_bytes

LINE = re.compile(
    r"^error: artifact store (?P<url>\S+) is out of disk space \((?P<free>[\d.]+ \w+) free\): "
    r"the (?P<left>\d+) modules still to write need about (?P<need>[\d.]+) (?P<unit>\w+); "
    r"free that much or pass another --out, then rerun the same command to resume$"
)
_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2}


@pytest.fixture(scope="module")
def job(tiny_compressed):
    """(args builder, reference store): the session's tiny model and its uninterrupted compression."""
    model, calib, reference = tiny_compressed
    return (lambda out: compress_args(model, calib, out)), reference


def _check_full_disk_outcome(out: Path, reference: Path, code: int, stderr: str) -> None:
    """One error line naming the store and the space needed; every module already written intact."""
    assert code == 2
    assert "Traceback" not in stderr
    (line,) = error_lines(stderr)
    match = LINE.match(line)
    assert match, line
    assert match["url"] == str(out)
    assert temp_files(out) == []
    n_whole = readable_modules(out)  # header valid, each stored module checksum-verified
    assert 0 < n_whole < N_MODULES
    assert int(match["left"]) == N_MODULES - n_whole
    stored = files(out)
    for name, data in stored.items():
        if name != "manifest.json":
            assert data == files(reference)[name], name  # the previous modules are the reference's bytes
    # the estimate of what is left is close to what the reference run really wrote for those modules
    left = sum(len(d) for n, d in files(reference).items() if n not in stored and n != "manifest.json")
    need = float(match["need"]) * _UNITS[match["unit"]]
    assert 0.7 * left <= need <= 1.5 * left, (need, left)


def test_injected_enospc(job, tmp_path, monkeypatch, capsys):
    args, reference = job
    out = tmp_path / "store"
    budget = {"left": sum(len(d) for d in files(reference).values()) // 2}
    real_write = LocalFileOpener.write

    def write(self, data):  # a disk with `left` bytes free: the write that crosses the line fails part-way
        room = budget["left"]
        if len(data) > room:
            real_write(self, bytes(data)[:room])
            budget["left"] = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)
        budget["left"] -= len(data)
        return real_write(self, data)

    monkeypatch.setattr(LocalFileOpener, "write", write)
    code, _, stderr = run_main(args(out), capsys)
    _check_full_disk_outcome(out, reference, code, stderr)

    monkeypatch.undo()  # space freed
    code, stdout, stderr = run_main(args(out), capsys)
    assert code == 0, stderr
    assert_same_artifacts(out, reference)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 64 KiB tmpfs mounted at tmp_path/disk (skips where mounting is not allowed)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); test_injected_enospc covers a full disk")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_real_full_tmpfs(job, small_tmpfs, capsys):
    args, reference = job
    out = small_tmpfs / "store"
    code, _, stderr = run_main(args(out), capsys)
    _check_full_disk_outcome(out, reference, code, stderr)
    free_reported = LINE.match(error_lines(stderr)[0])["free"]
    assert free_reported == format_bytes(os.statvfs(small_tmpfs).f_bavail * os.statvfs(small_tmpfs).f_frsize)

    subprocess.run(["mount", "-o", "remount,size=1m", str(small_tmpfs)], check=True)  # space freed
    code, _, stderr = run_main(args(out), capsys)
    assert code == 0, stderr
    assert_same_artifacts(out, reference)
