"""ArtifactStore: compressed modules on a local directory or any fsspec URL, one code path.

Owns reading and writing artifact files and manifest entries (layout in manifest.py),
atomic writes, checksums, and resume (`has`). Knows nothing about models: fingerprints of
the weights an artifact is applied to are checked in apply.py. Never imports transformers.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from typing import Any, Mapping

import fsspec
import torch
from fsspec.implementations.local import LocalFileSystem
from calderalab import __version__, core, faults
from calderalab.artifacts import access, atomic, codec
from calderalab.artifacts.fingerprint import bytes_sha256, weight_fingerprint
from calderalab.artifacts.manifest import Manifest, ManifestHeader, ModuleEntry, module_stem
from calderalab.artifacts.provenance import core_code_hash, stale_reason
from calderalab.errors import ArtifactError, StoreFullError, format_bytes

log = logging.getLogger(__name__)

_META_PREFIX = "calderalab."  # our keys in the safetensors header, stripped before from_tensors


class ArtifactStore:
    """Artifacts of one model under `url` ("/path", "file://", "s3://bucket/x", "memory://x", ...).

    `storage_options` go to fsspec (e.g. {"client_kwargs": {"endpoint_url": ...}} for S3).
    """

    def __init__(self, url: str, **storage_options: Any) -> None:
        self.url = url
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url, **storage_options)
        except ImportError as err:  # fsspec names the package: "Install s3fs to access S3"
            raise ArtifactError(f"cannot open {url}: {err} (for s3:// run `pip install 'calderalab[s3]'`)") from None
        self.root = self.root.rstrip("/")

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    # ------------------------------------------------------------ low-level I/O

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def _write_atomic(self, rel: str, data: bytes) -> None:
        """Make `rel` appear whole or not at all.

        Local filesystems: temp file + rename (atomic.py). Object stores: one PUT is already
        atomic (an object becomes visible only once complete), and a rename would be a
        non-atomic copy. A full disk raises StoreFullError naming the store and the space needed.
        """
        path = self._path(rel)
        crash_point = "module_write" if rel.startswith("modules/") else "manifest_write"
        if not isinstance(self.fs, LocalFileSystem):
            faults.point(crash_point)
            with access.translated(self.url, self.fs, "write"):
                self.fs.pipe_file(path, data)
            return
        try:
            atomic.write_local(self.fs, path, data, crash_point)
        except OSError as err:
            if err.errno not in atomic.FULL_ERRNOS:
                raise
            free = atomic.free_bytes(path)
            raise StoreFullError(
                f"artifact store {self.url} is out of disk space: writing {rel} needs {format_bytes(len(data))}, "
                f"{format_bytes(free)} free; free space or use another store, then rerun to resume",
                self.url, len(data), free,
            ) from None

    def remove_dead_temp_files(self) -> list[str]:
        """Delete temp files left by writers on this host that are no longer running; return them.

        A killed writer leaves its half-written `.tmp-…` file behind (readers never look at
        those). Temp files of live processes, and of other hosts sharing the filesystem, are kept.
        Object stores have no temp files.
        """
        if not isinstance(self.fs, LocalFileSystem) or not self.fs.exists(self.root):
            return []
        dead = [p for p in self.fs.find(self.root) if atomic.is_temp(p) and not atomic.writer_alive(p)]
        for path in dead:
            self.fs.rm(path)
            log.info("removed %s, left by a writer that died", path)
        return dead

    def _read(self, rel: str) -> bytes:
        try:
            with access.translated(self.url, self.fs, "read"):
                return self.fs.cat_file(self._path(rel))
        except FileNotFoundError as err:
            raise ArtifactError(f"artifact file {self.url}/{rel} is missing") from err

    # ------------------------------------------------------------ header

    def init(self, model: Mapping[str, Any], calibration: Mapping[str, Any]) -> ManifestHeader:
        """Create the store's header, or check an existing one describes the same model and calibration.

        `model`: {"ref": ..., "revision": ..., ...} identity of the source model. A store holds
        artifacts of one model and one calibration only, so resuming into it with another
        raises ArtifactError instead of mixing them.
        """
        created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        fresh = ManifestHeader(dict(model), dict(calibration), __version__, created)
        if self.fs.exists(self._path("manifest.json")):
            existing = self.header()
            if not existing.same_source(fresh):
                raise ArtifactError(
                    f"{self.url} holds artifacts of model {existing.model} with calibration "
                    f"{existing.calibration}, not {fresh.model} with {fresh.calibration}; use a new store URL"
                )
            return existing
        self._write_atomic("manifest.json", json.dumps(fresh.to_dict(), sort_keys=True, indent=1).encode())
        return fresh

    def exists(self) -> bool:
        """True when the store has a header (manifest.json)."""
        with access.translated(self.url, self.fs, "read"):
            return self.fs.exists(self._path("manifest.json"))

    def header(self) -> ManifestHeader:
        """The store's header; a missing store, a missing bucket or refused credentials fail here in one line."""
        try:
            with access.translated(self.url, self.fs, "read"):  # one GET: a missing bucket says so itself
                data = self.fs.cat_file(self._path("manifest.json"))
        except FileNotFoundError:
            raise ArtifactError(f"no artifact store at {self.url}: manifest.json is missing (compress first)") from None
        return ManifestHeader.from_dict(json.loads(data), f"{self.url}/manifest.json")

    def check_writable(self) -> None:
        """Fail now, in one line, when this store cannot be written (missing bucket, read-only policy,
        wrong credentials, read-only directory): a probe object is written and deleted."""
        access.check_writable(self.fs, self.root, self.url)

    # ------------------------------------------------------------ entries

    def _entry_rel(self, layer: int, name: str, spec_key: str) -> str:
        return f"entries/{module_stem(layer, name, spec_key)}.json"

    def entry(self, layer: int, name: str, spec: Any) -> ModuleEntry:
        key = spec if isinstance(spec, str) else spec.key()
        rel = self._entry_rel(layer, name, key)
        if not self.fs.exists(self._path(rel)):
            raise ArtifactError(f"module {layer}.{name} (spec {key}) is not in {self.url}: compress it first")
        return ModuleEntry.from_dict(json.loads(self._read(rel)), rel)

    def manifest(self) -> Manifest:
        """Header merged with every entry sidecar (or, if there are none, manifest.json's snapshot)."""
        header = self.header()
        entries_dir = self._path("entries")
        with access.translated(self.url, self.fs, "read"):
            found = self.fs.find(entries_dir) if self.fs.exists(entries_dir) else []
        # A crashed writer's half-written temp file is never read.
        paths = [p for p in found if p.endswith(".json") and not atomic.is_temp(p)]
        if paths:
            with access.translated(self.url, self.fs, "read"):
                blobs = self.fs.cat(paths)  # one batched (concurrent on object stores) read
            rows = [(p, json.loads(blobs[p])) for p in sorted(blobs)]
        else:
            rows = [("manifest.json", r) for r in json.loads(self._read("manifest.json")).get("modules", [])]
        modules = {}
        for where, row in rows:
            entry = ModuleEntry.from_dict(row, where)
            modules[(entry.layer, entry.module, entry.spec_key)] = entry
        return Manifest(header, modules)

    def consolidate(self) -> Manifest:
        """Write the merged manifest into manifest.json (call once, after all writers finish)."""
        manifest = self.manifest()
        self._write_atomic("manifest.json", json.dumps(manifest.to_dict(), sort_keys=True, indent=1).encode())
        return manifest

    def find(self, layer: int, name: str, spec: Any) -> ModuleEntry | None:
        """The module's entry when it and a file of the recorded size both exist, else None.

        Says nothing about which code made it: see `has` and provenance.stale_reason.
        """
        rel = self._entry_rel(layer, name, spec.key())
        if not self.fs.exists(self._path(rel)):
            return None
        entry = ModuleEntry.from_dict(json.loads(self._read(rel)), rel)
        path = self._path(entry.file)
        return entry if self.fs.exists(path) and self.fs.size(path) == entry.size else None

    def has(self, layer: int, name: str, spec: Any, threads: int | None = None) -> bool:
        """True when the module is stored whole AND was made by this calderalab version and core
        code at `threads` intra-op threads (default torch's current count): the resume check of
        compress_model, anything else is to be recomputed."""
        entry = self.find(layer, name, spec)
        threads = torch.get_num_threads() if threads is None else threads
        return entry is not None and stale_reason(entry, threads=threads) is None

    # ------------------------------------------------------------ modules

    def put(
        self,
        layer: int,
        name: str,
        spec: Any,
        decomposition: Any,
        W: torch.Tensor,
        H: torch.Tensor | None = None,
        qualified_name: str | None = None,
        threads: int | None = None,
    ) -> ModuleEntry:
        """Store one module's decomposition of original weight W (d_out, d_in); H (d_in, d_in) optional;
        `threads`: the intra-op thread count it was decomposed at, recorded in its entry.

        Writes the safetensors file, then its entry: a module counts as stored only once
        its entry exists, so a crash between the two just redoes the module on resume.
        """
        if W.dim() != 2:
            raise ValueError(f"W must be (d_out, d_in), got shape {tuple(W.shape)}")
        self.header()  # refuse to write into a store without a header (call init first)
        key = spec.key()
        rel = f"modules/{module_stem(layer, name, key)}.safetensors"
        tensors = {k: v.detach().cpu().contiguous() for k, v in decomposition.to_tensors().items()}
        own = {"layer": str(layer), "module": name, "spec": json.dumps(spec.to_dict(), sort_keys=True)}
        meta = {**decomposition.metadata(), **{_META_PREFIX + k: v for k, v in own.items()}}
        data = codec.encode(tensors, meta)
        self._write_atomic(rel, data)
        entry = ModuleEntry(
            layer=layer,
            module=name,
            spec_key=key,
            spec=spec.to_dict(),
            shape=(int(W.shape[0]), int(W.shape[1])),
            original_fingerprint=weight_fingerprint(W),
            file=rel,
            sha256=bytes_sha256(data),
            size=len(data),
            metrics=module_metrics(decomposition, W, H),
            qualified_name=qualified_name,
            tool_version=__version__,
            core_hash=core_code_hash(),
            threads=threads,
        )
        self._write_atomic(self._entry_rel(layer, name, key), entry.to_json().encode())
        log.debug("stored %s (%d bytes)", rel, len(data))
        return entry

    def read_verified(self, entry: ModuleEntry) -> bytes:
        """The bytes of an entry's file, after checking its size and sha256 against the manifest."""
        data = self._read(entry.file)
        digest = bytes_sha256(data)
        if digest != entry.sha256 or len(data) != entry.size:
            raise ArtifactError(
                f"artifact file {self.url}/{entry.file} is corrupted: manifest says sha256 {entry.sha256} "
                f"({entry.size} bytes), file has sha256 {digest} ({len(data)} bytes); delete the file and "
                "its entries/ sidecar and resume the compression to rewrite it"
            )
        return data

    def load(self, layer: int, name: str, spec: Any) -> Any:
        """The stored Decomposition of one module, checksum-verified."""
        return decomposition_from_bytes(self.read_verified(self.entry(layer, name, spec)))


def decomposition_from_bytes(data: bytes) -> Any:
    """Decode a module file into core.Decomposition (our own metadata keys removed)."""
    meta = {k: v for k, v in codec.read_metadata(data).items() if not k.startswith(_META_PREFIX)}
    return core.Decomposition.from_tensors(codec.decode(data), meta)


def module_metrics(decomposition: Any, W: torch.Tensor, H: torch.Tensor | None) -> dict[str, float | None]:
    """Validation metrics of one module: relative H-weighted error, Pearson corr, SQNR, bpw."""
    W_hat = decomposition.reconstruct()
    W32 = W.detach().to(torch.float32)
    return {
        "relative_error": None if H is None else float(core.relative_error(W32, W_hat, H)),  # Ŵ reconstructed once
        "weight_correlation": float(core.weight_correlation(W32, W_hat)),
        "sqnr_db": float(core.sqnr_db(W32, W_hat)),
        "bpw": float(decomposition.bpw),
        "bpw_paper": float(decomposition.bpw_paper),
    }
