"""One evaluation job: instances → model (+ stored artifacts) → probes → one run in the results database.

`calderalab eval` (`run_eval_job`) and every experiment (`Session.evaluate`) store their runs
through `evaluate_and_store`: the same probe-runner call, the same run record (a sha256 of the
artifact manifest's content, the decoding settings with parse-failure and truncation counts),
the same database write. It lives above eval/ because it writes the results database; eval/
itself never imports it. Heavy pieces (models, artifacts, the probe runner) are imported inside
the functions that need them, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from calderalab.eval.outcomes import RunOutcomes, join_probe_results
from calderalab.eval.runner import EvalConfig, probe_counts
from calderalab.eval.suite import EvalSettings, build_instances
from calderalab.eval.types import Instance, ProbeResult
from calderalab.results import DEFAULT_DB, ResultsDB
from calderalab.run_record import RunRecord, detect_git_sha

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (items done, items total)
# (model, tokenizer, instances, EvalConfig, progress) -> one ProbeResult per (instance, probe)
Evaluator = Callable[[Any, Any, Sequence[Instance], EvalConfig, Any], Sequence[ProbeResult]]


def default_evaluator(model: Any, tokenizer: Any, instances: Sequence[Instance], config: EvalConfig,
                      progress: Progress | None = None) -> list[ProbeResult]:
    """The real probe runner (`calderalab.eval.runner.evaluate`)."""
    from calderalab.eval.runner import evaluate

    return list(evaluate(model, tokenizer, instances, config=config, progress=progress).results)


@dataclass(frozen=True)
class Evaluated:
    """What the probes ran on: the model's reference and base-weight fingerprint, and — for compressed
    weights — the artifact manifest's content hash, the layers kept original and the plan's hash."""

    model_ref: str
    fingerprint: str
    manifest_hash: str | None = None  # None: the uncompressed model
    protected: tuple[int, ...] = ()
    plan_hash: str | None = None


def decoding_record(config: EvalConfig, results: Sequence[ProbeResult], seconds: float) -> dict[str, Any]:
    """The decoding settings a run used, with its parse-failure and truncation counts per probe kind."""
    parse_failures, truncated = probe_counts(results)
    return {**config.to_dict(), "greedy": True, "parse_failures": parse_failures, "truncated": truncated,
            "seconds": round(seconds, 2)}


def _placement(model: Any) -> tuple[str, Any]:
    """(device, dtype) the model's weights are on: what a run records, whoever loaded the model."""
    weight = next(model.parameters())
    return str(weight.device), weight.dtype


def evaluate_and_store(db_path: str | Path, model: Any, tokenizer: Any, settings: EvalSettings,
                       instances: Sequence[Instance], evaluated: Evaluated, label: str, experiment: str = "",
                       config: dict[str, Any] | None = None, evaluator: Evaluator = default_evaluator,
                       progress: Progress | None = None) -> tuple[int, RunOutcomes]:
    """Run the probes on `instances` with the model as it stands and store the run; returns its id and
    its per-instance outcomes."""
    from calderalab import __version__, devices

    started = time.perf_counter()
    results = list(evaluator(model, tokenizer, instances, settings.decoding, progress))
    record = RunRecord(
        model_ref=evaluated.model_ref, scoring=settings.scoring, suite=settings.suite, seeds=settings.instance_seeds,
        n_requested=settings.n, model_fingerprint=evaluated.fingerprint, artifacts_manifest_hash=evaluated.manifest_hash,
        protected_layers=tuple(sorted(evaluated.protected)), plan_hash=evaluated.plan_hash,
        decoding=decoding_record(settings.decoding, results, time.perf_counter() - started), label=label,
        config={**(config or {}), "device": devices.describe(*_placement(model))}, experiment=experiment, tool_version=__version__, git_sha=detect_git_sha(),
    )
    with ResultsDB(db_path) as db:
        run_id = db.add_run(record, results, instances)
    return run_id, RunOutcomes(label, record.protected_label, join_probe_results(instances, results))


@dataclass(frozen=True)
class EvalJob:
    """`calderalab eval`: one model, with the artifacts of a store applied (except `protect`, a layer
    set such as "23-27" or "last:5") or uncompressed, evaluated on `settings`, stored as one run."""

    model_ref: str
    settings: EvalSettings = field(default_factory=EvalSettings)
    artifacts: str | None = None  # artifact store directory or URL; None = the uncompressed model
    protect: str | None = None
    label: str = ""
    experiment: str = ""
    device: str = "auto"  # devices.resolve: the GPU when one is visible
    dtype: str = "auto"  # float32 on cpu, bfloat16 on cuda
    load: str = "auto"  # models.open_to_run: memory, layers (one decoder layer in memory at a time) or auto

    def __post_init__(self) -> None:
        from calderalab import devices

        devices.check_load(self.load)
        if self.protect is not None and self.artifacts is None:
            raise ValueError("--protect only makes sense with --artifacts (the uncompressed model protects everything)")

    @property
    def default_label(self) -> str:
        if self.artifacts is None:
            return "Baseline"
        return f"compressed (protect {self.protect})" if self.protect else "compressed"


def check_outputs_early(db_path: str | Path, artifacts: str | None, model_ref: str) -> None:
    """Open the results database and the artifact store before any expensive work, so that a file that
    is not a results database, or a missing, unreadable, newer-format or mismatched store (checked
    against the model's structure, artifacts.preflight), fails in a second, not after the model load
    and the whole evaluation."""
    from calderalab.artifacts.preflight import open_for_model

    with ResultsDB(db_path):
        pass
    if artifacts is not None:
        open_for_model(artifacts, model_ref)


def run_eval_job(job: EvalJob, db_path: str | Path = DEFAULT_DB, loaded: tuple[Any, Any] | None = None,
                 progress: Progress | None = None, evaluator: Evaluator = default_evaluator) -> tuple[int, RunOutcomes]:
    """Evaluate the job's model on its instances, store the run, and return (run id, outcomes).

    `loaded` = (model, tokenizer) already loaded from job.model_ref (tests share one); it must
    hold the original weights, and with job.artifacts it is modified in place.
    """
    from calderalab import devices
    from calderalab.eval.target import apply_stored, model_fingerprint
    from calderalab.models import open_to_run

    device, dtype = devices.resolve(job.device, job.dtype)  # a missing GPU fails before anything loads
    instances = build_instances(job.settings)
    check_outputs_early(db_path, job.artifacts, job.model_ref)
    log.info("evaluating %s on %d instances (%s, %s scoring)", job.model_ref, len(instances), job.settings.suite,
             job.settings.scoring)
    model, tokenizer = loaded if loaded is not None else open_to_run(job.model_ref, dtype, device, job.load)
    evaluated = Evaluated(job.model_ref, model_fingerprint(model))
    config: dict[str, Any] = {"artifacts": job.artifacts, "protect": job.protect,
                              "tasks_dirs": list(job.settings.tasks_dirs), "data": job.settings.data_path}
    if job.artifacts is not None:
        applied = apply_stored(model, job.artifacts, job.protect)
        evaluated = Evaluated(job.model_ref, evaluated.fingerprint, applied.manifest_hash, applied.protected)
        config.update(applied.summary)
    label = job.label or job.default_label
    return evaluate_and_store(db_path, model, tokenizer, job.settings, instances, evaluated, label, job.experiment,
                              config, evaluator, progress)
