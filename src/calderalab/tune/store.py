"""Read a store's modules for tuning and write the tuned ones as a new store (same manifest format).

A tuned store is an ordinary artifact store: the same header fields (model record copied from the
source, so fingerprints still tie it to the original weights), one safetensors file and entry per
module, written through ArtifactStore.put (checksums, fingerprints, atomic writes). Its header's
`calibration` says where it came from: {"compression": the source's calibration, "tuning": record}.
Never imports transformers; the model is reached through calderalab.models.
"""

from __future__ import annotations

from typing import Any

import torch

from calderalab.artifacts import ArtifactStore, ModuleEntry, check_fingerprints, select_entries
from calderalab.artifacts.store import decomposition_from_bytes
from calderalab.core.decomposition import Decomposition
from calderalab.errors import ArtifactError


def load_modules(store: ArtifactStore, model: torch.nn.Module, plan: Any = None) -> list[tuple[ModuleEntry, Decomposition]]:
    """Every stored module of `model`, fingerprint- and checksum-verified: each layer/module must hold one
    spec, or `plan` (plans.load_plan) names the one to take where the store holds several (`--plan kl`)."""
    from calderalab import models

    entries = select_entries(store.manifest(), models.num_layers(model), plan=plan)
    if not entries:
        raise ArtifactError(f"{store.url} holds no modules of this model: nothing to tune")
    check_fingerprints(model, entries, store.url)
    return [(entry, decomposition_from_bytes(store.read_verified(entry))) for entry in entries]


def check_new_store(out: ArtifactStore) -> None:
    """Refuse to write into an existing store: a tuned store is written once, whole."""
    if out.exists():
        raise ArtifactError(f"{out.url} already holds an artifact store; choose a new --out directory "
                            "(a tuned store is never mixed into another)")


def write_store(
    source: ArtifactStore,
    out: ArtifactStore,
    model: torch.nn.Module,
    modules: list[tuple[ModuleEntry, Decomposition]],
    record: dict[str, Any],
) -> None:
    """Write `modules` (tuned or passed through) into the new store `out`, then its merged manifest.

    `model` must hold the ORIGINAL weights: every entry's fingerprint is taken from them.
    """
    from calderalab import models

    check_new_store(out)
    header = source.header()
    out.init(header.model, {"compression": header.calibration, "tuning": record})
    for entry, decomposition in modules:
        W = models.target_linear(model, entry.layer, entry.module).weight.detach()
        out.put(entry.layer, entry.module, decomposition.spec, decomposition, W, None, entry.qualified_name)
    out.consolidate()
