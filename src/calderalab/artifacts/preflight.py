"""Open an artifact store for a command before any weights load.

Readers (eval, validate, sensitivity, ppl, export): the store is there and readable, its header
is of a format this calderalab reads, and its modules fit the model's structure (architecture,
layer count, module shapes: a meta-device skeleton, no weights). Writers (compress): an existing
store's header reads, and a probe object can be written. So a wrong URL, a missing bucket,
refused credentials or a store of a differently shaped model fail in about a second, not after
the model load. Whether the stored modules were made from *these* weights is only known once the
weights are loaded (fingerprints, apply.check_fingerprints). calderalab.models is imported on use.
"""

from __future__ import annotations

from typing import Any, Mapping

from calderalab.artifacts.manifest import Manifest
from calderalab.artifacts.store import ArtifactStore
from calderalab.errors import ArtifactError


def structure_mismatch(manifest: Manifest, shapes: Mapping[tuple[int, str], tuple[int, int]],
                       architecture: str) -> str | None:
    """Why the stored modules cannot belong to a model of this structure, or None when they can.

    `shapes`: (layer, module) -> (d_out, d_in) of the model (models.module_shapes).
    """
    stored = manifest.header.model.get("architecture")
    if stored and stored != architecture:
        return f"the store holds modules of a {stored}, the model is a {architecture}"
    n_layers = 1 + max(layer for layer, _ in shapes)
    for (layer, name, _), entry in sorted(manifest.modules.items()):
        if (layer, name) not in shapes:
            return f"module {layer}.{name} is stored but the model has {n_layers} layers (0-{n_layers - 1})"
        if tuple(shapes[(layer, name)]) != tuple(entry.shape):
            return f"module {layer}.{name} is {tuple(entry.shape)} in the store but {tuple(shapes[(layer, name)])} in the model"
    return None


def open_for_model(url: str, model_ref: Any) -> ArtifactStore:
    """The store at `url`, checked (header, entries, structure) against model `model_ref` without loading weights."""
    from calderalab import models

    store = ArtifactStore(url)
    manifest = store.manifest()  # missing store or bucket, refused credentials, newer format: fail here
    skeleton = models.load_skeleton(model_ref)
    reason = structure_mismatch(manifest, models.module_shapes(skeleton), type(skeleton).__name__)
    if reason is not None:
        made_from = manifest.header.model.get("ref", "unknown")
        raise ArtifactError(f"artifacts in {url} were made from another model: {reason}; pass the model they were "
                            f"made from ({made_from}) or another store")
    return store


def open_for_writing(url: str, model_ref: Any) -> ArtifactStore:
    """The store at `url`, ready for compress to write: an existing store fits the model (as in
    open_for_model), and a probe object can be written and deleted."""
    store = ArtifactStore(url)
    if store.exists():
        open_for_model(url, model_ref)  # a newer format or another model's store fails now, not after the load
    store.check_writable()
    return store
