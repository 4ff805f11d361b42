"""The artifact manifest: what a store holds and where it came from. Plain data, JSON only.

Layout of a store (local directory or any fsspec URL):

    manifest.json                              header: format, model, calibration, tool, time
    modules/L003.q.<spec key>.safetensors      one Decomposition (packed codes + metadata header)
    entries/L003.q.<spec key>.json             that module's manifest entry (sidecar)

Why sidecars: each module's entry is its own small object, written once, atomically,
after its safetensors file. Writers never read-modify-write a shared file, so concurrent
writers (Ray workers, several machines on one bucket) cannot lose each other's entries,
and a killed run leaves only complete entries behind. The manifest a reader sees is the
header merged with every sidecar (`Manifest`). `ArtifactStore.consolidate()` also writes
the merged view into manifest.json under "modules" for people and tools that read one file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from calderalab.errors import ArtifactError

FORMAT_VERSION = 1


def module_stem(layer: int, name: str, spec_key: str) -> str:
    """File stem of one module's artifact: "L003.q.<spec key>"."""
    return f"L{layer:03d}.{name}.{spec_key}"


@dataclass(frozen=True)
class ModuleEntry:
    """The manifest record of one stored module (layer, name, spec).

    `original_fingerprint` is weight_fingerprint(W) of the weight it was made from;
    `sha256`/`size` are of the safetensors file at `file` (relative to the store root);
    `metrics` holds relative_error (H-weighted, None when no H was given), weight_correlation
    (Pearson of Ŵ with W), sqnr_db, bpw and bpw_paper. `tool_version` and `core_hash` say which
    calderalab and which decomposition code made it (None in entries written before they were
    recorded); resume reuses an entry only when both match this code (provenance.stale_reason).
    `threads` is the intra-op thread count it was decomposed at (executors; None before it was
    recorded).
    """

    layer: int
    module: str
    spec_key: str
    spec: dict[str, Any]
    shape: tuple[int, int]
    original_fingerprint: str
    file: str
    sha256: str
    size: int
    metrics: dict[str, float | None]
    qualified_name: str | None = None
    tool_version: str | None = None
    core_hash: str | None = None
    threads: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> "ModuleEntry":
        try:
            return cls(**{**data, "shape": tuple(data["shape"])})
        except (TypeError, KeyError) as err:
            raise ArtifactError(f"manifest entry {where} is malformed ({err}); delete it and rerun to rewrite it") from err


@dataclass(frozen=True)
class ManifestHeader:
    """Store-level provenance: which model (ref, revision), which calibration, which tool, when."""

    model: dict[str, Any]
    calibration: dict[str, Any]
    tool_version: str
    created: str
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> "ManifestHeader":
        version = data.get("format_version")
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise ArtifactError(
                f"{where}: artifact format_version {version} is not supported by this calderalab (reads "
                f"{FORMAT_VERSION}): the store was written by a newer calderalab ({data.get('tool_version', '?')}); "
                "upgrade calderalab to read it"
            )
        if version != FORMAT_VERSION:
            raise ArtifactError(
                f"{where}: artifact format_version {version!r} is not supported by this calderalab "
                f"(reads {FORMAT_VERSION}); recompress or use a matching calderalab version"
            )
        try:
            return cls(**{k: data[k] for k in ("model", "calibration", "tool_version", "created", "format_version")})
        except KeyError as err:
            raise ArtifactError(f"{where}: manifest header lacks {err}") from err

    def same_source(self, other: "ManifestHeader") -> bool:
        """True when two headers describe the same model and calibration (times may differ)."""
        return self.model == other.model and self.calibration == other.calibration


@dataclass(frozen=True)
class Manifest:
    """The merged view: header plus every module entry, keyed by (layer, module, spec_key)."""

    header: ManifestHeader
    modules: dict[tuple[int, str, str], ModuleEntry]

    def specs_for(self, layer: int, name: str) -> list[str]:
        return sorted(k for (l, n, k) in self.modules if (l, n) == (layer, name))

    def to_dict(self) -> dict[str, Any]:
        rows = [asdict(self.modules[key]) for key in sorted(self.modules)]
        return {**self.header.to_dict(), "modules": rows}

    def content_hash(self) -> str:
        """sha256 over the header and every entry (spec, original-weight fingerprint, file hash): two
        evaluations with equal hashes applied the same stored modules of the same source model."""
        content = {"header": self.header.to_dict(),
                   "modules": sorted(json.dumps(asdict(e), sort_keys=True) for e in self.modules.values())}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
