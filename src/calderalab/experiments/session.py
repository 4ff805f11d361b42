"""What every experiment shares: one loaded model, one artifact store, one probe suite, one
results database, and the two operations built on them.

- `Session.compress(plan)`: make sure every module the plan compresses is stored (resumes:
  stored modules are skipped, so each (layer, module, spec) is decomposed once, ever).
- `Session.evaluate(label, plan)`: assemble Ŵ from stored artifacts + original weights for the
  plan's protected layers, swap them in (restored on exit), run the probes, store the run in
  the results database. A run with the same evaluation key (model, plan hash, instances,
  scoring settings) already in the database is read back instead of evaluated again.
Imports torch and the model stack lazily; prints nothing (progress goes to callbacks).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from calderalab.experiments.config import CompressSettings, EvalSettings, RunSettings

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage description, done, total)
# (model, tokenizer, instances, EvalConfig, progress(done, total)) -> ProbeResults
Evaluator = Callable[[Any, Any, Sequence[Any], Any, Any], Sequence[Any]]


def default_evaluator(model: Any, tokenizer: Any, instances: Sequence[Any], config: Any, progress: Any = None) -> list[Any]:
    """The real probe runner (`calderalab.eval.runner.evaluate`)."""
    from calderalab.eval.runner import evaluate

    return list(evaluate(model, tokenizer, instances, config=config, progress=progress).results)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":  # float32 on CPU (bf16 matmuls are slow there), bf16 on accelerators
        return torch.float32 if device == "cpu" else torch.bfloat16
    return getattr(torch, dtype)


def probe_instances(settings: EvalSettings) -> tuple[list[Any], list[Any]]:
    """(suite, canonical seven): canonical + generated instances per seed, and the seven alone."""
    from calderalab.eval.tasks import canonical_instances, generate_instances, load_families

    families = load_families(extra_dirs=settings.tasks_dirs)
    if settings.families:
        unknown = sorted(set(settings.families) - {f.id for f in families})
        if unknown:
            raise ValueError(f"unknown task families {unknown}; known: {sorted(f.id for f in families)}")
        families = [f for f in families if f.id in settings.families]
    suite: dict[str, Any] = {}
    for seed in settings.seeds:
        for inst in generate_instances(families, settings.n_per_family, seed, include_canonical=True):
            suite.setdefault(inst.uid, inst)
    canonical = [i for i in canonical_instances(load_families(extra_dirs=settings.tasks_dirs))
                 if not settings.families or i.family in settings.families]
    return list(suite.values()), canonical


def ladder_probe_instances(settings: EvalSettings) -> list[Any]:
    """The difficulty ladder: `ladder_per_step` instances of every ladder at every k, per seed."""
    from calderalab.eval.tasks import ladder_instances, load_ladders

    ladders = load_ladders(extra_dirs=settings.tasks_dirs)
    return [i for seed in settings.seeds for i in ladder_instances(ladders, settings.ladder_per_step, seed)]


def eval_config(settings: EvalSettings, scoring: str) -> Any:
    from calderalab.eval.runner import EvalConfig

    return EvalConfig(scoring=scoring, batch_size=settings.batch_size, max_new_tokens=settings.max_new_tokens)


@dataclass
class Session:
    """A loaded model with its artifact store, probe instances and results database."""

    run: RunSettings
    compress_settings: CompressSettings
    eval_settings: EvalSettings
    model: Any
    tokenizer: Any
    store: Any
    experiment: str
    evaluator: Evaluator = default_evaluator
    progress: Progress | None = None
    timings: dict[str, float] = field(default_factory=dict)
    _calib: Any = None
    _fingerprint: str | None = None

    # ---------------------------------------------------------------- construction
    @staticmethod
    def open(run: RunSettings, compress: CompressSettings, evals: EvalSettings, experiment: str,
             evaluator: Evaluator = default_evaluator, progress: Progress | None = None,
             model_and_tokenizer: tuple[Any, Any] | None = None) -> "Session":
        """Load the model (unless given) and open the artifact store."""
        from calderalab.artifacts import ArtifactStore

        started = time.perf_counter()
        if model_and_tokenizer is None:
            from calderalab.models import load_model

            device = resolve_device(run.device)
            model_and_tokenizer = load_model(run.model, dtype=resolve_dtype(run.dtype, device), device=device)
        Path(run.out).mkdir(parents=True, exist_ok=True)
        model, tokenizer = model_and_tokenizer
        session = Session(run, compress, evals, model, tokenizer, ArtifactStore(run.artifacts_url), experiment,
                          evaluator, progress)
        session.timings["load model"] = time.perf_counter() - started
        return session

    @property
    def n_layers(self) -> int:
        from calderalab.models import num_layers

        return num_layers(self.model)

    def _tick(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    def timed(self, stage: str, seconds: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def fingerprint(self) -> str:
        """sha256 of the ORIGINAL weights (computed once, before any swap)."""
        if self._fingerprint is None:
            from calderalab.eval.job import model_fingerprint

            self._fingerprint = model_fingerprint(self.model)
        return self._fingerprint

    # ---------------------------------------------------------------- compression
    def compress(self, plan: Any, stage: str = "compress") -> Any:
        """Store every module `plan` compresses that is not stored yet; returns the CompressReport."""
        from calderalab.compress import CompressStarted, LayerCompressed, compress_model

        self.fingerprint()  # before anything touches the weights
        calib = self._calibration(plan)  # timed as its own stage, not inside compression
        started = time.perf_counter()
        state = {"done": 0, "total": 0}

        def on_event(event: Any) -> None:
            if isinstance(event, CompressStarted):
                state["total"] = len(event.todo_layers)
                self._tick(stage, 0, state["total"])
            elif isinstance(event, LayerCompressed):
                state["done"] += 1
                self._tick(stage, state["done"], state["total"])

        report = compress_model(self.model, plan, self.store, calib, progress=on_event,
                                tokenizer=self.tokenizer, model_ref=self.run.model)
        reused = report.modules and report.n_resumed == len(report.modules)
        self.timed(stage + (" (all stored: reused)" if reused else ""), time.perf_counter() - started)
        log.info("%s: %d modules (%d already stored) in %.1fs", stage, len(report.modules), report.n_resumed, report.seconds)
        return report

    def _calibration(self, plan: Any) -> Any:
        """Calibration tokens, built once per session and only when the plan has modules to do
        (a fully stored plan gets the config, which compress_model then never uses)."""
        from calderalab.calib import load_calibration

        if self._calib is None:
            if all(self.store.has(layer, name, spec) for (layer, name), spec in plan.compressed()):
                return self.compress_settings.calib
            started = time.perf_counter()
            self._calib = load_calibration(self.model, self.tokenizer, self.compress_settings.calib)
            self.timed("calibration data", time.perf_counter() - started)
        return self._calib

    # ---------------------------------------------------------------- evaluation
    def weights(self, plan: Any) -> dict[tuple[int, str], Any]:
        """Ŵ of every module the plan compresses, from stored artifacts (fingerprint-checked)."""
        from calderalab.artifacts import assemble_weights

        return assemble_weights(self.store, self.model, plan=plan)

    def eval_key(self, plan_hash: str | None, protected: Sequence[int], instances: Sequence[Any], scoring: str) -> str:
        payload = {
            "model": self.fingerprint(), "plan": plan_hash, "protected": sorted(protected),
            "instances": [i.uid for i in instances], "scoring": scoring,
            "eval": eval_config(self.eval_settings, scoring).to_dict(),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def evaluate(self, label: str, plan: Any | None, instances: Sequence[Any], scoring: str,
                 protected: Sequence[int] = (), bits: str = "-", stage: str | None = None) -> Any:
        """Evaluate the plan's model (None: the uncompressed baseline); returns `RunOutcomes`.

        Reuses a stored run with the same evaluation key. `protected` is what the report's
        Protected column shows (the plan's protected layers, or an ultra plan's boosted layers).
        """
        from calderalab.results import ResultsDB

        plan_hash = None if plan is None else plan.hash()
        key = self.eval_key(plan_hash, protected, instances, scoring)
        with ResultsDB(self.run.db_path) as db:
            for stored in db.list_runs(self.experiment):
                if stored.record.config.get("eval_key") == key and stored.record.label == label:
                    log.info("%s (%s): reusing stored run %d", label, scoring, stored.run_id)
                    return db.run_outcomes(stored.run_id)
        stage = stage or f"evaluate {label} ({scoring})"
        started = time.perf_counter()
        results = self._run_probes(plan, instances, scoring, stage)
        self.timed(f"evaluate ({scoring})", time.perf_counter() - started)
        record = self._record(label, plan, plan_hash, protected, bits, scoring, key, instances)
        with ResultsDB(self.run.db_path) as db:
            run_id = db.add_run(record, results, instances)
            return db.run_outcomes(run_id)

    def _run_probes(self, plan: Any | None, instances: Sequence[Any], scoring: str, stage: str) -> list[Any]:
        from calderalab.models import swapped_weights

        config = eval_config(self.eval_settings, scoring)
        tick = lambda done, total: self._tick(stage, done, total)  # noqa: E731
        if plan is None:
            return list(self.evaluator(self.model, self.tokenizer, instances, config, tick))
        with swapped_weights(self.model, self.weights(plan)):
            return list(self.evaluator(self.model, self.tokenizer, instances, config, tick))

    def _record(self, label: str, plan: Any, plan_hash: str | None, protected: Sequence[int], bits: str,
                scoring: str, key: str, instances: Sequence[Any]) -> Any:
        from calderalab import __version__
        from calderalab.results import RunRecord, detect_git_sha

        seeds = tuple(sorted({i.seed for i in instances if getattr(i, "seed", None) is not None})) or (0,)
        return RunRecord(
            model_ref=self.run.model, scoring=scoring, suite="goodhart", seeds=seeds,
            model_fingerprint=self.fingerprint(),
            artifacts_manifest_hash=None if plan is None else self.store.url,
            protected_layers=tuple(sorted(protected)), plan_hash=plan_hash,
            decoding=eval_config(self.eval_settings, scoring).to_dict(), label=label,
            config={"eval_key": key, "bits": bits, "artifacts": None if plan is None else self.store.url,
                    "plan_preset": None if plan is None else getattr(plan, "preset", None)},
            experiment=self.experiment, tool_version=__version__, git_sha=detect_git_sha(),
        )
