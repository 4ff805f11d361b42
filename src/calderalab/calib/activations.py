"""Calibration activations between decoder layers: in memory, or spilled to disk (`--offload-dir`).

One hidden-state tensor (batch, seq_len, d_model) per calibration batch. `DiskActivations` keeps
each in its own file under a private temporary folder and reads one back at a time, so only one
batch is in memory while a layer runs; `torch.save`/`torch.load` round-trip the bits exactly.

Imports torch only.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch


class MemoryActivations(list):
    """Hidden states kept in memory: a plain list that also answers `discard`."""

    def discard(self) -> None:
        self.clear()


class DiskActivations:
    """Hidden states as files `00000.pt`, `00001.pt`, ... in a fresh folder under `root`."""

    def __init__(self, root: Path | str) -> None:
        Path(root).mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="calderalab-activations-", dir=root))
        self._count = 0

    def append(self, hidden: torch.Tensor) -> None:
        torch.save(hidden.detach().contiguous(), self.folder / f"{self._count:05d}.pt")
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[torch.Tensor]:
        for i in range(self._count):
            yield torch.load(self.folder / f"{i:05d}.pt", weights_only=True)

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self._count = 0


def new_activations(offload_dir: Path | str | None) -> MemoryActivations | DiskActivations:
    return MemoryActivations() if offload_dir is None else DiskActivations(offload_dir)
