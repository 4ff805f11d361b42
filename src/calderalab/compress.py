"""The compression driver: calibrate → decompose (executor) → artifacts, one decoder layer at a time.

Order of work (DESIGN.md §1 Artifacts, §2 Scale):
1. Discover the target modules, check the plan fits them, report plan hash and honest bpw.
2. Work out what is left to do (resume: modules the store already holds are skipped, after
   checking they were made from these very weights, by this calderalab version and core code;
   modules made by other code are recomputed).
3. Stream Hessians layer by layer from the ORIGINAL model's activations, decompose every
   non-protected module that is still missing, write each artifact atomically with the original
   weight's fingerprint and its metrics, move on.
Prints nothing: progress goes to an optional callback with typed events; the CLI renders them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from calderalab import core
from calderalab.artifacts.fingerprint import weight_fingerprint
from calderalab.artifacts.provenance import stale_reason
from calderalab.calib import CalibConfig, CalibData, collect_hessians, load_calibration
from calderalab.errors import ArtifactError, StoreFullError, format_bytes
from calderalab.executors import DecomposeJob, ExecutorName, check_executor, make_executor, resolve_threads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModuleResult:
    """One stored module and its metrics (from the manifest entry)."""

    layer: int
    module: str
    spec_key: str
    relative_error: float | None
    weight_correlation: float
    bpw: float
    n_params: int
    resumed: bool


@dataclass(frozen=True)
class CompressStarted:
    """Sent once, before any work: what will be done and what it costs in bits."""

    plan_hash: str
    plan_bpw: Any  # plans.PlanBpw
    n_layers: int
    n_modules: int
    n_todo: int
    todo_layers: tuple[int, ...]


@dataclass(frozen=True)
class CalibrationReady:
    description: str
    n_tokens: int
    token_sha256: str


@dataclass(frozen=True)
class LayerCompressed:
    layer: int
    results: tuple[ModuleResult, ...]
    seconds: float


CompressEvent = CompressStarted | CalibrationReady | LayerCompressed
ProgressFn = Callable[[CompressEvent], None]


@dataclass(frozen=True)
class CompressReport:
    store_url: str
    plan_hash: str
    plan_bpw: Any
    modules: tuple[ModuleResult, ...]
    calibration: dict[str, Any] | None
    executor: str
    seconds: float

    @property
    def n_resumed(self) -> int:
        return sum(m.resumed for m in self.modules)

    def per_layer(self) -> list[dict[str, float]]:
        """Per layer: mean relative error and weight correlation, parameter-weighted bpw."""
        rows = []
        for layer in sorted({m.layer for m in self.modules}):
            ms = [m for m in self.modules if m.layer == layer]
            errs = [m.relative_error for m in ms if m.relative_error is not None]
            n = sum(m.n_params for m in ms)
            rows.append({
                "layer": layer,
                "n_modules": len(ms),
                "relative_error": sum(errs) / len(errs) if errs else float("nan"),
                "weight_correlation": sum(m.weight_correlation for m in ms) / len(ms),
                "min_weight_correlation": min(m.weight_correlation for m in ms),
                "bpw": sum(m.bpw * m.n_params for m in ms) / n,
            })
        return rows

    @property
    def mean_weight_correlation(self) -> float:
        return sum(m.weight_correlation for m in self.modules) / max(len(self.modules), 1)


def _result(entry: Any, resumed: bool) -> ModuleResult:
    m = entry.metrics
    return ModuleResult(entry.layer, entry.module, entry.spec_key, m.get("relative_error"), m["weight_correlation"],
                        m["bpw"], entry.shape[0] * entry.shape[1], resumed)


def _model_record(model: torch.nn.Module, ref: str | None = None) -> dict[str, Any]:
    """The store header's `model` record: `ref` (the caller's reference, ideally `models.model_identity`
    of what was loaded), revision when the config knows it, architecture."""
    config = getattr(model, "config", None)
    return {
        "ref": ref or getattr(config, "_name_or_path", None) or type(model).__name__,
        "revision": getattr(config, "_commit_hash", None),
        "architecture": type(model).__name__,
    }


def _check_resumed(model: torch.nn.Module, store: Any, targets: list[Any], plan: Any,
                   threads: int) -> tuple[list[ModuleResult], dict[int, list[tuple[str, Any]]]]:
    """Split the plan into modules already stored (fingerprint-checked) and modules to do, by layer.

    A stored module made from other weights is refused; one made by another calderalab version,
    other core code or at another thread count is recomputed (one warning per reason), so a resumed
    store never mixes in results this run would not make. Only layers with stored modules are read (lazy models).
    """
    from calderalab.models import onloaded

    done, todo, stale = [], {}, Counter()
    for t in targets:
        specs = [(n, plan.spec(t.index, n)) for n in t.modules]
        stored = {n: store.find(t.index, n, spec) for n, spec in specs if spec is not None}
        with onloaded(model, t) if any(stored.values()) else contextlib.nullcontext():
            for name, spec in specs:
                if spec is None:
                    continue
                entry = stored[name]
                if entry is not None:
                    _check_fingerprint(store, entry, t.modules[name].weight)
                    reason = stale_reason(entry, threads=threads)
                    if reason is None:
                        done.append(_result(entry, resumed=True))
                        continue
                    stale[reason] += 1
                todo.setdefault(t.index, []).append((name, spec))
    for reason, count in stale.items():
        log.warning("%s: %d module(s) %s: recomputing", store.url, count, reason)
    return done, todo


def _check_fingerprint(store: Any, entry: Any, weight: torch.Tensor) -> None:
    found = weight_fingerprint(weight)
    if found != entry.original_fingerprint:
        raise ArtifactError(
            f"{store.url} already holds module {entry.layer}.{entry.module} made from other weights "
            f"(fingerprint {entry.original_fingerprint[:12]}…, this model {found[:12]}…); "
            "compress into a new store"
        )


def compress_model(
    model: torch.nn.Module,
    plan: Any,
    store: Any,
    calib: CalibConfig | CalibData,
    executor: ExecutorName = "local",
    progress: ProgressFn | None = None,
    *,
    tokenizer: Any = None,
    model_ref: str | None = None,
    num_cpus: int | None = None,
    hessians: Iterable[tuple[int, dict[str, torch.Tensor]]] | None = None,
    offload_dir: str | None = None,
    threads: int | None = None,
) -> CompressReport:
    """Compress `model` under `plan` into `store`; resumable, deterministic.

    Args:
        calib: a CalibConfig (tokens are built with `tokenizer`) or ready CalibData.
        model_ref: what the store header records as the model (`models.model_identity` of the reference).
        hessians: precomputed (layer, {name: H}) pairs (e.g. cached by a benchmark that
            compresses one model many ways); default: streamed from the calibration data.
        offload_dir: spill the calibration activations between layers to files under this folder.
        threads: intra-op threads of every decomposition (default: torch's current count); part of what
            a stored module records, since MKL's last bits depend on it (`executors`).
    The model may be fully in memory or opened lazily (`models.open_model`); either way each decoder
    layer's weights are used inside `models.onloaded`, so a lazy model holds about one layer at a time.
    Returns a CompressReport of every module the plan compresses (resumed ones included).
    """
    from calderalab import models, plans

    started = time.perf_counter()
    emit = progress or (lambda event: None)
    threads = resolve_threads(threads)
    check_executor(executor, num_cpus, threads)  # before any calibration or Hessian work
    targets = models.discover_layers(model)
    shapes = {(t.index, n): tuple(m.weight.shape) for t in targets for n, m in t.modules.items()}
    plan.validate(shapes)
    plan_bpw = plans.plan_bpw(plan, shapes)
    if store.exists():
        store.header()  # a store of a newer format version is refused before any work
        if isinstance(calib, CalibData):  # ready tokens: a store of another calibration is refused even
            store.init(_model_record(model, model_ref), calib.manifest_entry())  # when nothing is left to do
    store.remove_dead_temp_files()
    done, todo = _check_resumed(model, store, targets, plan, threads)
    emit(CompressStarted(plan.hash(), plan_bpw, len(targets), len(done) + sum(map(len, todo.values())),
                         sum(map(len, todo.values())), tuple(sorted(todo))))
    calibration = None
    if todo:
        calib_data = calib if isinstance(calib, CalibData) else load_calibration(model, tokenizer, calib)
        calibration = calib_data.manifest_entry()
        store.init(_model_record(model, model_ref), calibration)
        emit(CalibrationReady(calib_data.description, calib_data.n_tokens, calib_data.sha256))
        stream = hessians if hessians is not None else collect_hessians(
            model, calib_data.batches, layers=sorted(todo), targets=targets, offload_dir=offload_dir,
            forward_dtype=calib_data.forward_dtype)
        try:
            done += _compress_layers(model, targets, todo, stream, store, make_executor(executor, num_cpus, threads), emit)
        except StoreFullError as err:
            raise _out_of_space(err, store, todo, shapes, threads) from None
    modules = tuple(sorted(done, key=lambda m: (m.layer, core.MODULE_NAMES.index(m.module))))
    return CompressReport(store.url, plan.hash(), plan_bpw, modules, calibration, executor, time.perf_counter() - started)


# Per stored module besides its packed bits: the entries/ sidecar (~0.8 KiB) and the safetensors header.
_MODULE_OVERHEAD_BYTES = 1536


def _module_bytes(spec: Any, shape: tuple[int, int]) -> int:
    """About how many bytes one module's artifact takes on disk, from its spec's honest bpw."""
    d_out, d_in = shape
    return int(core.expected_bpw(spec, d_out, d_in) * d_out * d_in / 8) + _MODULE_OVERHEAD_BYTES


def _out_of_space(err: StoreFullError, store: Any, todo: dict[int, list[tuple[str, Any]]],
                  shapes: dict[tuple[int, str], tuple[int, int]], threads: int) -> StoreFullError:
    """The store's disk-full error restated for the whole job: how much the modules still to write need."""
    left = [(layer, name, spec) for layer, items in todo.items() for name, spec in items
            if not store.has(layer, name, spec, threads)]
    needed = sum(_module_bytes(spec, shapes[(layer, name)]) for layer, name, spec in left)
    return StoreFullError(
        f"artifact store {store.url} is out of disk space ({format_bytes(err.free_bytes)} free): the {len(left)} "
        f"modules still to write need about {format_bytes(needed)}; free that much or pass another --out, then rerun "
        "the same command to resume",
        store.url, needed, err.free_bytes,
    )


@dataclass
class _Pending:
    layer: int
    jobs: list[DecomposeJob]
    handles: list[Any]
    started: float
    qualified: dict[str, str] = field(default_factory=dict)


def _compress_layers(model: torch.nn.Module, targets: list[Any], todo: dict[int, list[tuple[str, Any]]],
                     stream: Iterable[tuple[int, dict[str, torch.Tensor]]], store: Any, executor: Any,
                     emit: ProgressFn) -> list[ModuleResult]:
    """Submit each layer's jobs as its Hessians arrive; store the previous layer's results meanwhile."""
    from calderalab.models import onloaded

    by_index = {t.index: t for t in targets}
    results: list[ModuleResult] = []
    pending: _Pending | None = None
    try:
        for layer, H_by_name in _only(stream, todo):
            t = by_index[layer]
            with onloaded(model, t):  # already in memory when the stream just ran this layer
                jobs = [DecomposeJob(layer, name, t.modules[name].weight.detach().to(torch.float32).clone(), H_by_name[name], spec)
                        for name, spec in todo[layer]]
            handles = executor.submit(jobs)
            if pending is not None:
                results += _store_layer(pending, executor, store, emit)
            pending = _Pending(layer, jobs, handles, time.perf_counter(), dict(getattr(t, "qualified_names", {}) or {}))
        if pending is not None:
            results += _store_layer(pending, executor, store, emit)
    finally:
        executor.close()
    missing = sorted(set(todo) - {r.layer for r in results})
    if missing:
        raise RuntimeError(f"no Hessians arrived for layers {missing}")
    return results


def _only(stream: Iterable[tuple[int, dict[str, torch.Tensor]]], todo: dict[int, Any]) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    return ((layer, Hs) for layer, Hs in stream if layer in todo)


def _store_layer(pending: _Pending, executor: Any, store: Any, emit: ProgressFn) -> list[ModuleResult]:
    decompositions = executor.gather(pending.handles)
    results = []
    for job, decomposition in zip(pending.jobs, decompositions):
        entry = store.put(job.layer, job.name, job.spec, decomposition, job.W, job.H, pending.qualified.get(job.name),
                          threads=executor.threads)
        results.append(_result(entry, resumed=False))
    log.info("layer %d: %d modules stored", pending.layer, len(results))
    emit(LayerCompressed(pending.layer, tuple(results), time.perf_counter() - pending.started))
    return results
