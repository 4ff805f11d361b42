"""Put stored artifacts into a model: select, verify, then swap; nothing half-applied.

Owns the order of operations: choose which stored module goes where (plan, protect,
layers), check every original-weight fingerprint against the model, load and checksum
every file, and only then swap weights. Model access goes through calderalab.models
(target_linear, set_weights, num_layers); this file never imports transformers.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from calderalab import core
from calderalab.artifacts.fingerprint import weight_fingerprint
from calderalab.artifacts.manifest import Manifest, ModuleEntry
from calderalab.artifacts.store import ArtifactStore, decomposition_from_bytes
from calderalab.errors import ArtifactError

log = logging.getLogger(__name__)


def _models():
    # Imported on use: calderalab.models pulls in transformers, which store-only users
    # (listing, verifying, copying artifacts) should not pay for.
    from calderalab import models

    return models


@dataclass(frozen=True)
class ApplyRecord:
    """What apply_artifacts did: modules swapped as (layer, name, spec_key), layers kept original."""

    store_url: str
    applied: tuple[tuple[int, str, str], ...]
    protected_layers: tuple[int, ...]

    @property
    def n_modules(self) -> int:
        return len(self.applied)


def select_entries(
    manifest: Manifest,
    n_layers: int,
    protect: Iterable[int] = (),
    layers: Iterable[int] | None = None,
    plan: Any = None,
) -> list[ModuleEntry]:
    """The entries to apply, in (layer, MODULE_NAMES) order.

    With a plan: every compressed (layer, module) of the plan, with the plan's spec.
    Without: every module of `layers` (default: all n_layers), which must each hold exactly
    one spec. Protected layers are skipped either way. A wanted module that is not stored
    raises ArtifactError naming it.
    """
    protected = set(protect)
    wanted_layers = set(range(n_layers) if layers is None else layers)
    if bad := sorted(l for l in protected | wanted_layers if not 0 <= l < n_layers):
        raise ArtifactError(f"layers {bad} out of range: model has {n_layers} layers (0-{n_layers - 1})")
    if plan is not None and plan.n_layers != n_layers:
        raise ArtifactError(f"plan is for {plan.n_layers} layers but the model has {n_layers}")
    chosen = []
    for layer in sorted(wanted_layers - protected):
        for name in core.MODULE_NAMES:
            if plan is not None:
                spec = plan.spec(layer, name)
                if spec is None:
                    continue
                keys = [spec.key()]
            else:
                keys = manifest.specs_for(layer, name)
                if len(keys) > 1:
                    raise ArtifactError(
                        f"module {layer}.{name} has several stored specs {keys}: pass the plan that says which"
                    )
            if not keys or (layer, name, keys[0]) not in manifest.modules:
                want = keys[0] if keys else "any spec"
                raise ArtifactError(
                    f"module {layer}.{name} ({want}) is missing from the artifact store: compress it, "
                    "protect layer {layer}, or restrict `layers`".replace("{layer}", str(layer))
                )
            chosen.append(manifest.modules[(layer, name, keys[0])])
    return chosen


def check_fingerprints(model: torch.nn.Module, entries: list[ModuleEntry], store_url: str) -> None:
    """Refuse artifacts made from another model: the FIRST module whose weight differs raises.
    (On a lazily opened model each layer is read for its check and released.)"""
    models = _models()
    targets = models.discover_layers(model)
    for layer, group in itertools.groupby(entries, key=lambda e: e.layer):
        with models.onloaded(model, targets[layer]):
            _check_layer(model, list(group), store_url)


def _check_layer(model: torch.nn.Module, entries: list[ModuleEntry], store_url: str) -> None:
    for entry in entries:
        W = _models().target_linear(model, entry.layer, entry.module).weight
        if tuple(W.shape) != tuple(entry.shape):
            raise ArtifactError(
                f"artifacts in {store_url} were made from another model: module {entry.layer}.{entry.module} "
                f"has shape {tuple(W.shape)} here but {tuple(entry.shape)} in the manifest"
            )
        found = weight_fingerprint(W)
        if found != entry.original_fingerprint:
            raise ArtifactError(
                f"artifacts in {store_url} were made from another model: module {entry.layer}.{entry.module} "
                f"original-weight fingerprint is {entry.original_fingerprint} in the manifest but {found} in "
                "this model; compress this model into a new store"
            )


def _checked_entries(store, model, protect, layers, plan) -> list[ModuleEntry]:
    """The entries to apply, every original-weight fingerprint checked against `model`."""
    entries = select_entries(store.manifest(), _models().num_layers(model), protect, layers, plan)
    check_fingerprints(model, entries, store.url)
    return entries


def _assemble(store, model, protect, layers, plan) -> tuple[list[ModuleEntry], dict]:
    entries = _checked_entries(store, model, protect, layers, plan)
    return entries, {(entry.layer, entry.module): _reconstruct(store, entry) for entry in entries}


def _reconstruct(store: ArtifactStore, entry: ModuleEntry) -> torch.Tensor:
    """Ŵ float32 (d_out, d_in) of one stored module, its file checksummed first."""
    return decomposition_from_bytes(store.read_verified(entry)).reconstruct().to(torch.float32)


def assemble_weights(
    store: ArtifactStore,
    model: torch.nn.Module,
    protect: Iterable[int] = (),
    layers: Iterable[int] | None = None,
    plan: Any = None,
) -> dict[tuple[int, str], torch.Tensor]:
    """{(layer, name): Ŵ float32 (d_out, d_in)} for a models.swapped_weights context.

    All fingerprints are checked before any file is read, and all files are checksummed
    and reconstructed before returning, so a caller never swaps in a partial set.
    """
    return _assemble(store, model, tuple(protect), layers, plan)[1]


def apply_artifacts(
    model: torch.nn.Module,
    store: ArtifactStore,
    protect: Iterable[int] = (),
    layers: Iterable[int] | None = None,
    plan: Any = None,
) -> torch.nn.Module:
    """Swap the stored Ŵ into `model` (in place) and return it; protected layers keep originals.

    The record of what was applied is left on the model as `model.calderalab_applied`
    (an ApplyRecord), so provenance travels with the model into evaluation.
    """
    protect = tuple(sorted(set(protect)))
    reader = _models().layer_weights(model)
    if reader is None:
        entries, weights = _assemble(store, model, protect, layers, plan)
        _models().set_weights(model, weights)
    else:  # a lazy model: one layer's Ŵ in memory at a time, persisted; a failure forgets them all
        entries = _checked_entries(store, model, protect, layers, plan)
        with reader.all_or_nothing():
            for _, group in itertools.groupby(entries, key=lambda e: e.layer):
                _models().set_weights(model, {(e.layer, e.module): _reconstruct(store, e) for e in group})
    applied = tuple((e.layer, e.module, e.spec_key) for e in entries)
    record = ApplyRecord(store_url=store.url, applied=applied, protected_layers=protect)
    model.calderalab_applied = record
    log.info("applied %d modules from %s (protected layers %s)", record.n_modules, store.url, protect)
    return model

