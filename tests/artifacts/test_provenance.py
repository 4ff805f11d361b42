"""Provenance: the source hash changes with the code, and stale entries are named with both hashes."""

from types import SimpleNamespace

import pytest

from calderalab import __version__
from calderalab.artifacts.provenance import core_code_hash, directory_source_hash, source_hash, stale_reason


def write(directory, files):
    directory.mkdir(exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_directory_hash_is_sorted_by_name_and_sees_every_byte(tmp_path):
    a = write(tmp_path / "a", {"x.py": "A = 1\n", "y.py": "B = 2\n"})
    b = write(tmp_path / "b", {"y.py": "B = 2\n", "x.py": "A = 1\n"})  # other creation order
    assert directory_source_hash(a) == directory_source_hash(b)
    (b / "y.py").write_text("B = 3\n")
    assert directory_source_hash(a) != directory_source_hash(b)
    # moving a line from one file to the next is a change too
    c = write(tmp_path / "c", {"x.py": "A = 1\nB = 2\n", "y.py": ""})
    assert directory_source_hash(a) != directory_source_hash(c)
    (b / "notes.txt").write_text("not source")
    (b / "y.py").write_text("B = 2\n")
    assert directory_source_hash(a) == directory_source_hash(b)


def test_empty_directory_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no Python source files"):
        directory_source_hash(tmp_path)


def test_core_hash_is_the_core_package_source():
    from calderalab.artifacts.provenance import PACKAGE_ROOT

    assert core_code_hash() == directory_source_hash(PACKAGE_ROOT / "core") == source_hash("core")
    assert source_hash("calib") != core_code_hash()


def entry(core_hash, tool_version=__version__):
    return SimpleNamespace(core_hash=core_hash, tool_version=tool_version)


def test_stale_reason_names_both_hashes_or_versions():
    now = core_code_hash()
    assert stale_reason(entry(now)) is None
    assert stale_reason(entry("ab" * 32)) == f"stored by core abababab, this code is {now[:8]}"
    assert stale_reason(entry(None)) == f"stored by core an unrecorded version, this code is {now[:8]}"
    assert stale_reason(entry(now, "0.0.1")) == f"stored by calderalab 0.0.1, this is calderalab {__version__}"
