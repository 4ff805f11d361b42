"""Atomic writes on a local filesystem, and the temp files a crashed writer leaves behind.

A file appears whole or not at all: its bytes go into a uniquely named temp file beside it,
which is then renamed over the final name (atomic on POSIX within one directory). A writer
killed mid-write leaves `.tmp-<pid>-<host>-<random>-<name>` behind; readers never look at
such names, and a later run on the same host deletes those whose writer is gone. Standard
library plus fsspec's local filesystem; no torch.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import socket
import uuid
from typing import Any

from calderalab import faults

TEMP_PREFIX = ".tmp-"
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # no space left, disk quota exceeded
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temp_name(name: str) -> str:
    """The temp file name a write of `name` goes through; it records the writer's pid and host."""
    return f"{TEMP_PREFIX}{os.getpid()}-{_HOST}-{uuid.uuid4().hex[:12]}-{name}"


def is_temp(path: str) -> bool:
    return path.rsplit("/", 1)[-1].startswith(TEMP_PREFIX)


def writer_alive(path: str) -> bool:
    """False only when the temp file's name says it was written on this host by a process now gone."""
    parts = path.rsplit("/", 1)[-1][len(TEMP_PREFIX) :].split("-", 3)
    if len(parts) < 4 or not parts[0].isdigit() or parts[1] != _HOST:
        return True  # another host's, or a name we did not make: not ours to judge
    try:
        os.kill(int(parts[0]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def free_bytes(path: str) -> int | None:
    """Free bytes on the filesystem holding `path` (or its nearest existing ancestor); None if unknown."""
    here = path
    while here and not os.path.exists(here):
        here = os.path.dirname(here.rstrip("/"))
    try:
        return shutil.disk_usage(here or "/").free
    except OSError:
        return None


def write_local(fs: Any, path: str, data: bytes, crash_point: str) -> None:
    """Write `data` to `path` on the local fsspec filesystem `fs` atomically; OSErrors propagate.

    On any failure the temp file is removed. The fault-injection point `crash_point` sits
    halfway through the data (flushed first), so a fault test leaves a really half-written
    temp file, as a crash would.
    """
    parent, name = path.rsplit("/", 1)
    tmp = f"{parent}/{temp_name(name)}"
    try:
        fs.makedirs(parent, exist_ok=True)
        with fs.open(tmp, "wb") as f:
            f.write(data[: len(data) // 2])
            faults.point(crash_point, before_kill=f.flush)
            f.write(data[len(data) // 2 :])
        fs.mv(tmp, path)
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise
