"""One evaluation job end to end: instances → model (+ artifacts) → probes → results database.

This is the library side of `calderalab eval`: the CLI parses options into an `EvalJob` and
calls `run_eval_job`. Heavy pieces (models, artifacts, the probe runner, plans) are imported
inside the functions that need them, so importing this module stays cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from calderalab.eval.outcomes import RunOutcomes, join_probe_results
from calderalab.eval.types import Instance, ProbeResult, Scoring, check_scoring
from calderalab.results import DEFAULT_DB, ResultsDB, RunRecord, detect_git_sha

log = logging.getLogger(__name__)

Suite = Literal["goodhart", "ladder", "canonical", "gsm8k"]
SUITES = ("goodhart", "ladder", "canonical", "gsm8k")


@dataclass(frozen=True)
class EvalJob:
    """What to evaluate and how.

    Suites: `goodhart` — n instances of every task family per seed (default 5 × 23 families × seeds
    0,1,2 = 345, so a rate's 95% interval is about ±5 points); `ladder` — n instances of every
    ladder family at every step count k = 1 … 6 per seed; `canonical` — the report's seven tests
    (N = 7 supports no claim: ±30 points); `gsm8k` — n rows per seed, generation scoring only.
    """

    model_ref: str
    scoring: Scoring = "choice"
    suite: Suite = "goodhart"
    n: int = 5  # goodhart: per family and seed; ladder: per ladder, step count and seed; gsm8k: rows per seed
    seeds: tuple[int, ...] = (0, 1, 2)
    data_path: str | None = None  # GSM8K: a <split>.jsonl file or a data dir holding gsm8k/; None = shared data
    tasks_dirs: tuple[str, ...] = ()  # extra task-family (and ladder) directories
    artifacts: str | None = None  # artifact store directory or URL; None = the uncompressed model
    protect: str | None = None  # layer set kept original, e.g. "23-27" or "last:5"
    batch_size: int | None = None  # None: the runner's EvalConfig default
    label: str = ""
    experiment: str = ""

    def __post_init__(self) -> None:
        check_scoring(self.scoring)
        if self.suite not in SUITES:
            raise ValueError(f"--suite must be one of {', '.join(SUITES)}, got {self.suite!r}")
        if self.n <= 0:
            raise ValueError(f"--n must be > 0, got {self.n}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds must be distinct integers, got {list(self.seeds)}")
        if self.suite == "gsm8k" and self.scoring != "generate":
            raise ValueError("GSM8K has no answer options: use --scoring generate with --suite gsm8k")
        if self.suite != "gsm8k" and self.data_path is not None:
            raise ValueError("--data is only for --suite gsm8k; goodhart instances come from task families")
        if self.protect is not None and self.artifacts is None:
            raise ValueError("--protect only makes sense with --artifacts (the uncompressed model protects everything)")
        if self.batch_size is not None and self.batch_size <= 0:
            raise ValueError(f"--batch-size must be > 0, got {self.batch_size}")

    @property
    def instance_seeds(self) -> tuple[int, ...]:
        """The seeds the instances really come from (the canonical seven have seed 0 only)."""
        return (0,) if self.suite == "canonical" else self.seeds

    @property
    def default_label(self) -> str:
        if self.artifacts is None:
            return "Baseline"
        return f"compressed (protect {self.protect})" if self.protect else "compressed"


def _gsm8k_instances(job: EvalJob) -> list[Instance]:
    """job.n rows per seed; rows drawn by several seeds appear once (their uid is the row number)."""
    from calderalab.eval.gsm8k import load_gsm8k

    split, data_dir = "test", job.data_path
    if data_dir is not None and data_dir.endswith(".jsonl"):
        path = Path(data_dir)
        split, data_dir = path.stem, str(path.parent.parent)
    seen: dict[str, Instance] = {}
    for seed in job.seeds:
        for inst in load_gsm8k(split=split, limit=job.n, seed=seed, data_dir=data_dir):
            seen.setdefault(inst.uid, inst)
    return list(seen.values())


def build_instances(job: EvalJob) -> list[Instance]:
    """The job's instances (see EvalJob for the suites), deterministic in the seeds."""
    from calderalab.eval import tasks

    if job.suite == "gsm8k":
        return _gsm8k_instances(job)
    if job.suite == "ladder":
        ladders = tasks.load_ladders(extra_dirs=job.tasks_dirs)
        return [i for seed in job.seeds for i in tasks.ladder_instances(ladders, job.n, seed)]
    families = tasks.load_families(extra_dirs=job.tasks_dirs)
    if job.suite == "canonical":
        return tasks.canonical_instances(families)
    return [i for seed in job.seeds for i in tasks.generate_instances(families, job.n, seed)]


def model_fingerprint(model: Any) -> str:
    """sha256 over the names, shapes and bytes of every parameter (the original weights).

    Two runs with equal fingerprints ran the same base model, whatever its reference string.
    """
    import torch

    h = hashlib.sha256()
    for name, param in sorted(model.state_dict().items()):
        t = param.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())  # raw bytes: works for bf16 too
    return h.hexdigest()


def _compression_summary(manifest: Any, applied: Sequence[tuple[int, str, str]]) -> dict[str, Any]:
    """Nominal bits and the weight-count-averaged bpw of the modules actually swapped in."""
    entries = [manifest.modules[key] for key in applied]
    numel = [e.shape[0] * e.shape[1] for e in entries]
    bpws = [e.metrics.get("bpw") for e in entries]
    bits = sorted({int(e.spec["bits"]) for e in entries if "bits" in e.spec})
    summary: dict[str, Any] = {"n_modules_compressed": len(entries), "bits": "/".join(map(str, bits)) or "-"}
    if entries and all(b is not None for b in bpws):
        summary["mean_bpw_compressed"] = round(sum(b * n for b, n in zip(bpws, numel)) / sum(numel), 4)
    return summary


def _apply(job: EvalJob, model: Any) -> tuple[str, tuple[int, ...], dict[str, Any]]:
    """Swap in the stored Ŵ; return (manifest hash, protected layers, compression summary)."""
    from calderalab.artifacts import ArtifactStore, apply_artifacts
    from calderalab.models import num_layers
    from calderalab.plans import parse_layer_set

    store = ArtifactStore(job.artifacts)
    protect = parse_layer_set(job.protect, num_layers(model)) if job.protect else ()
    manifest = store.manifest()
    # Hash the manifest's content (header + every entry's spec, fingerprint and file hash).
    content = {"header": manifest.header.to_dict(),
               "modules": sorted(json.dumps(dataclasses.asdict(e), sort_keys=True) for e in manifest.modules.values())}
    manifest_hash = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    apply_artifacts(model, store, protect=protect)
    return manifest_hash, tuple(protect), _compression_summary(manifest, model.calderalab_applied.applied)


def _evaluate(
    job: EvalJob, model: Any, tokenizer: Any, instances: list[Instance], progress: Callable[[int, int], None] | None
) -> tuple[list[ProbeResult], dict]:
    """Run the probes; return the results and the decoding settings plus parse/truncation counts."""
    from calderalab.eval.runner import evaluate

    run = evaluate(model, tokenizer, instances, job.scoring, batch_size=job.batch_size, progress=progress)
    decoding = {**run.config.to_dict(), "greedy": True, "parse_failures": dict(run.parse_failures),
                "truncated": dict(run.truncated), "seconds": round(run.seconds, 2)}
    return list(run.results), decoding


def _check_outputs_early(job: EvalJob, db_path: str | Path) -> None:
    """Open the results database and the artifact store's header before any expensive work, so that a
    file that is not a results database, or a missing or newer-format store, fails in a second, not
    after the model load and the whole evaluation."""
    from calderalab.artifacts import ArtifactStore

    with ResultsDB(db_path):
        pass
    if job.artifacts is not None:
        ArtifactStore(job.artifacts).header()


def run_eval_job(
    job: EvalJob,
    db_path: str | Path = DEFAULT_DB,
    loaded: tuple[Any, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, RunOutcomes]:
    """Evaluate the job's model on its instances, store the run, and return (run id, outcomes).

    `progress(done, total)` is called as scoring advances (the CLI passes a progress bar).

    `loaded` = (model, tokenizer) already loaded from job.model_ref (tests share one); it must
    hold the original weights, and with job.artifacts it is modified in place.
    """
    from calderalab import __version__
    from calderalab.models import load_model

    instances = build_instances(job)
    _check_outputs_early(job, db_path)
    log.info("evaluating %s on %d instances (%s, %s scoring)", job.model_ref, len(instances), job.suite, job.scoring)
    model, tokenizer = loaded if loaded is not None else load_model(job.model_ref)
    fingerprint = model_fingerprint(model)
    manifest_hash, protected, compression = None, (), {}
    if job.artifacts is not None:
        manifest_hash, protected, compression = _apply(job, model)
    results, decoding = _evaluate(job, model, tokenizer, instances, progress)
    record = RunRecord(
        model_ref=job.model_ref, scoring=job.scoring, suite=job.suite, seeds=job.instance_seeds, n_requested=job.n,
        model_fingerprint=fingerprint, artifacts_manifest_hash=manifest_hash, protected_layers=protected,
        decoding=decoding, label=job.label or job.default_label,
        config={"artifacts": job.artifacts, "protect": job.protect, "tasks_dirs": list(job.tasks_dirs),
                "data": job.data_path, **compression},
        experiment=job.experiment, tool_version=__version__, git_sha=detect_git_sha(),
    )
    with ResultsDB(db_path) as db:
        run_id = db.add_run(record, results, instances)
    outcomes = join_probe_results(instances, results)
    return run_id, RunOutcomes(record.label, record.protected_label, outcomes)
