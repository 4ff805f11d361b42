"""What every experiment shares: one loaded model, one artifact store, one probe suite, one
results database, and the two operations built on them.

- `Session.compress(plan)`: make sure every module the plan compresses is stored (resumes:
  stored modules are skipped, so each (layer, module, spec) is decomposed once, ever).
- `Session.evaluate(label, plan)`: assemble Ŵ from stored artifacts + original weights for the
  plan's protected layers, swap them in (restored on exit), run the probes, store the run in
  the results database through `experiments.evaluation`, as `calderalab eval` does. A run with
  the same evaluation key (model, plan hash, instances, scoring settings) already in the
  database is read back instead of evaluated again.
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

from calderalab.eval.suite import EvalSettings
from calderalab.experiments.config import CompressSettings, RunSettings
from calderalab.experiments.evaluation import Evaluator, default_evaluator

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage description, done, total)


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
    identity: str = ""  # the store header's model ref: models.model_identity of what was loaded

    # ---------------------------------------------------------------- construction
    @staticmethod
    def open(run: RunSettings, compress: CompressSettings, evals: EvalSettings, experiment: str,
             evaluator: Evaluator = default_evaluator, progress: Progress | None = None,
             model_and_tokenizer: tuple[Any, Any] | None = None) -> "Session":
        """Open the artifact store, then load the model (unless given).

        With the model to load, the store is checked first (`artifacts.preflight.open_for_writing`:
        an existing store fits the model, a probe object can be written), and the device and dtype
        are resolved (`devices`), so a bad URL, refused credentials or a missing GPU fail in about a
        second rather than after the load."""
        from calderalab.artifacts import ArtifactStore

        started = time.perf_counter()
        identity = run.model  # a model handed in (tests) is named by the caller's reference
        if model_and_tokenizer is None:
            from calderalab import devices
            from calderalab.artifacts.preflight import open_for_writing
            from calderalab.models import model_identity, open_to_run

            device, dtype = devices.resolve(run.device, run.dtype)
            store = open_for_writing(run.artifacts_url, run.model)
            model_and_tokenizer = open_to_run(run.model, dtype, device, run.load)
            # The same header `calderalab compress` writes, so its stores and the study's are interchangeable.
            identity = model_identity(run.model)
        else:
            store = ArtifactStore(run.artifacts_url)
        Path(run.out).mkdir(parents=True, exist_ok=True)
        model, tokenizer = model_and_tokenizer
        session = Session(run, compress, evals, model, tokenizer, store, experiment,
                          evaluator, progress, identity=identity)
        session.timings["load model"] = time.perf_counter() - started
        return session

    @property
    def n_layers(self) -> int:
        from calderalab.models import num_layers

        return num_layers(self.model)

    def _tick(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    def settings_dict(self) -> dict[str, Any]:
        """The session's settings as plain data (for manifest.json)."""
        import dataclasses

        return {"run": dataclasses.asdict(self.run), "compress": dataclasses.asdict(self.compress_settings),
                "eval": dataclasses.asdict(self.eval_settings)}

    def timed(self, stage: str, seconds: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def fingerprint(self) -> str:
        """sha256 of the ORIGINAL weights (computed once, before any swap)."""
        if self._fingerprint is None:
            from calderalab.eval.target import model_fingerprint

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
                                tokenizer=self.tokenizer, model_ref=self.identity or self.run.model)
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

    def eval_key(self, plan_hash: str | None, protected: Sequence[int], instances: Sequence[Any], settings: EvalSettings) -> str:
        payload = {
            "model": self.fingerprint(), "plan": plan_hash, "protected": sorted(protected),
            "instances": [i.uid for i in instances], "scoring": settings.scoring, "eval": settings.decoding.to_dict(),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def evaluate(self, label: str, plan: Any | None, settings: EvalSettings, instances: Sequence[Any],
                 protected: Sequence[int] = (), bits: str = "-", stage: str | None = None) -> Any:
        """Evaluate the plan's model (None: the uncompressed baseline) on one pass (`settings` and its
        instances); returns `RunOutcomes`.

        Reuses a stored run with the same evaluation key. `protected` is what the report's
        Protected column shows (the plan's protected layers, or an ultra plan's boosted layers).
        """
        from calderalab.experiments.evaluation import Evaluated, evaluate_and_store
        from calderalab.results import ResultsDB

        plan_hash = None if plan is None else plan.hash()
        key = self.eval_key(plan_hash, protected, instances, settings)
        with ResultsDB(self.run.db_path) as db:
            for stored in db.list_runs(self.experiment):
                if stored.record.config.get("eval_key") == key and stored.record.label == label:
                    log.info("%s (%s): reusing stored run %d", label, settings.scoring, stored.run_id)
                    return db.run_outcomes(stored.run_id)
        stage = stage or f"evaluate {label} ({settings.scoring})"
        manifest_hash = None if plan is None else self.store.manifest().content_hash()
        evaluated = Evaluated(self.run.model, self.fingerprint(), manifest_hash, tuple(protected), plan_hash)
        config = {"eval_key": key, "bits": bits, "artifacts": None if plan is None else self.store.url,
                  "plan_preset": None if plan is None else getattr(plan, "preset", None)}
        tick = lambda done, total: self._tick(stage, done, total)  # noqa: E731
        started = time.perf_counter()
        with self._weights_of(plan):
            run_id, _ = evaluate_and_store(self.run.db_path, self.model, self.tokenizer, settings, instances, evaluated,
                                           label, self.experiment, config, self.evaluator, tick)
        self.timed(f"evaluate ({settings.scoring})", time.perf_counter() - started)
        with ResultsDB(self.run.db_path) as db:
            return db.run_outcomes(run_id)

    def _weights_of(self, plan: Any | None) -> Any:
        """A context with the plan's Ŵ swapped in (restored on exit); the original weights for None."""
        from contextlib import nullcontext

        from calderalab.models import swapped_weights

        return nullcontext() if plan is None else swapped_weights(self.model, self.weights(plan))
