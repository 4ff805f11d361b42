"""The model an evaluation runs on: its base-weight fingerprint and the stored artifacts swapped in.

Kept apart from the run recording (experiments.evaluation) so that eval/ never imports the
results database. Torch and the artifact stack are imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence


def model_fingerprint(model: Any) -> str:
    """sha256 over the names, shapes and bytes of every parameter (the original weights).

    Two runs with equal fingerprints ran the same base model, whatever its reference string.
    """
    import torch

    from calderalab.models import state_tensors

    h = hashlib.sha256()
    for name, param in state_tensors(model):  # a lazy model's layers are read one tensor at a time
        t = param.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())  # raw bytes: works for bf16 too
    return h.hexdigest()


@dataclass(frozen=True)
class Applied:
    """Stored artifacts swapped into a model: the manifest's content hash (`Manifest.content_hash`),
    the layers kept original, and a summary of the modules swapped in (bits, mean bpw)."""

    manifest_hash: str
    protected: tuple[int, ...]
    summary: dict[str, Any] = field(default_factory=dict)


def compression_summary(manifest: Any, applied: Sequence[tuple[int, str, str]]) -> dict[str, Any]:
    """Nominal bits and the weight-count-averaged bpw of the modules actually swapped in."""
    entries = [manifest.modules[key] for key in applied]
    numel = [e.shape[0] * e.shape[1] for e in entries]
    bpws = [e.metrics.get("bpw") for e in entries]
    bits = sorted({int(e.spec["bits"]) for e in entries if "bits" in e.spec})
    summary: dict[str, Any] = {"n_modules_compressed": len(entries), "bits": "/".join(map(str, bits)) or "-"}
    if entries and all(b is not None for b in bpws):
        summary["mean_bpw_compressed"] = round(sum(b * n for b, n in zip(bpws, numel)) / sum(numel), 4)
    return summary


def apply_stored(model: Any, artifacts: str, protect: str | None = None, plan: Any = None) -> Applied:
    """Swap every stored module into `model` in place, except the `protect` layer set (e.g. "23-27");
    with a `plan` (plans.Plan), each module's spec from it (a store holding several specs per module)."""
    from calderalab.artifacts import ArtifactStore, apply_artifacts
    from calderalab.models import num_layers
    from calderalab.plans import parse_layer_set

    store = ArtifactStore(artifacts)
    protected = tuple(parse_layer_set(protect, num_layers(model))) if protect else ()
    manifest = store.manifest()
    apply_artifacts(model, store, protect=protected, plan=plan)
    return Applied(manifest.content_hash(), protected, compression_summary(manifest, model.calderalab_applied.applied))
