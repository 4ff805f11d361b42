"""Artifact store: compressed modules + manifest on a local dir or fsspec URL; fingerprints; apply.

Imports torch, safetensors, fsspec and calderalab.core/models; never transformers directly.
"""

from calderalab.artifacts.apply import ApplyRecord, apply_artifacts, assemble_weights, check_fingerprints, select_entries
from calderalab.artifacts.fingerprint import weight_fingerprint
from calderalab.artifacts.manifest import FORMAT_VERSION, Manifest, ManifestHeader, ModuleEntry, module_stem
from calderalab.artifacts.store import ArtifactStore

__all__ = [
    "ApplyRecord",
    "ArtifactStore",
    "FORMAT_VERSION",
    "Manifest",
    "ManifestHeader",
    "ModuleEntry",
    "apply_artifacts",
    "assemble_weights",
    "check_fingerprints",
    "module_stem",
    "select_entries",
    "weight_fingerprint",
]
