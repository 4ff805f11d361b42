"""The results database: one SQLite file holding every evaluation run and its per-probe outcomes.

Owns the schema (versioned in `schema_info`), writing a run in one transaction, and reading
runs back, including two runs paired by instance uid for a later comparison. Standard library
plus the plain eval types only: no torch, no transformers. A run's record (what ran, with which
code) is `run_record.RunRecord`.

Tables: `runs` (one row per run: model, artifacts, plan, suite, N, seeds, scoring, decoding,
tool version, git sha, time, label/config/experiment), `run_instances` (the instances a run
saw), `outcomes` (one row per instance × probe) and the view `verdicts` (one row per instance
with PASS/GAP/FAIL/LUCKY).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

from calderalab import faults
from calderalab.errors import ResultsError
from calderalab.eval.outcomes import RunOutcomes, align, join_probe_results
from calderalab.eval.types import ChoiceDetail, Instance, ProbeResult
from calderalab.run_record import RunRecord, StoredRun

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # v2: outcomes.detail_json (options, pick, per-rotation scores)
APP_ID = "calderalab-results"
DEFAULT_DB = "runs.sqlite"  # the results database of `calderalab eval`, `compare`, `runs`, `report`
FOLDER_DB = "results.sqlite"  # an experiment's or study's own database, inside its report folder
# How long a writer waits for another process's transaction before giving up. A run is
# written in well under a second, so this only runs out when another process hangs.
BUSY_TIMEOUT_S = 60.0

_SCHEMA = """
CREATE TABLE schema_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    experiment TEXT NOT NULL,
    label TEXT NOT NULL,
    config_json TEXT NOT NULL,
    model_ref TEXT NOT NULL,
    model_fingerprint TEXT NOT NULL,
    artifacts_manifest_hash TEXT,
    protected_layers TEXT NOT NULL,
    plan_hash TEXT,
    suite TEXT NOT NULL,
    n_requested INTEGER,
    n_instances INTEGER NOT NULL,
    seeds TEXT NOT NULL,
    scoring TEXT NOT NULL,
    decoding_json TEXT NOT NULL,
    tool_version TEXT NOT NULL,
    git_sha TEXT,
    outcomes_hash TEXT NOT NULL
);
CREATE INDEX runs_experiment ON runs (experiment);
CREATE TABLE run_instances (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    uid TEXT NOT NULL,
    position INTEGER NOT NULL,
    family TEXT NOT NULL,
    instance_index INTEGER NOT NULL,
    instance_seed INTEGER NOT NULL,
    answer TEXT NOT NULL,
    answer_type TEXT NOT NULL,
    n_steps INTEGER NOT NULL,
    canonical INTEGER NOT NULL,
    PRIMARY KEY (run_id, uid)
);
CREATE TABLE outcomes (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    instance_uid TEXT NOT NULL,
    family TEXT NOT NULL,
    probe TEXT NOT NULL CHECK (probe IN ('execution', 'understanding')),
    scoring TEXT NOT NULL,
    correct INTEGER NOT NULL,
    parsed TEXT,
    raw_output TEXT NOT NULL,
    truncated INTEGER NOT NULL,
    detail_json TEXT,
    PRIMARY KEY (run_id, instance_uid, probe)
);
CREATE VIEW verdicts AS
SELECT run_id, instance_uid, family,
       MAX(CASE WHEN probe = 'understanding' THEN correct END) AS understood,
       MAX(CASE WHEN probe = 'execution' THEN correct END) AS executed,
       CASE
         WHEN MAX(CASE WHEN probe = 'understanding' THEN 1 END) IS NULL THEN NULL
         WHEN MAX(CASE WHEN probe = 'understanding' THEN correct END) = 1
           THEN CASE WHEN MAX(CASE WHEN probe = 'execution' THEN correct END) = 1 THEN 'PASS' ELSE 'GAP' END
         ELSE CASE WHEN MAX(CASE WHEN probe = 'execution' THEN correct END) = 1 THEN 'LUCKY' ELSE 'FAIL' END
       END AS verdict
FROM outcomes GROUP BY run_id, instance_uid, family;
"""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def outcomes_hash(results: Sequence[ProbeResult]) -> str:
    """sha256 over the sorted outcomes: two runs with equal hashes answered identically."""
    rows = sorted((r.instance_uid, r.probe, r.scoring, r.correct, r.parsed, r.raw_output) for r in results)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _connect(path: Path) -> sqlite3.Connection:
    """A connection in WAL mode with a busy timeout, transactions managed by `_transaction`.

    WAL lets readers run while one process writes; the busy timeout makes concurrent writers
    queue instead of failing with "database is locked"; autocommit mode (isolation_level=None)
    leaves BEGIN/COMMIT to us, so a run's rows are exactly one transaction.
    """
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    # Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is locked" at once,
    # without its busy handler, when another process is switching it too (two writers opening a new file:
    # 7 of 40 such races failed here): retry until the busy timeout, as the handler would.
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return conn
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                conn.close()
                raise
            time.sleep(0.01)


class ResultsDB:
    """SQLite results store (WAL mode, created on first use). Use as a context manager or call close()."""

    def __init__(self, path: str | Path = DEFAULT_DB):
        self.path = Path(path)
        if self.path.is_dir():
            raise ResultsError(f"{self.path} is a directory; --db must name a .sqlite file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = _connect(self.path)
            self._check_or_create()
        except sqlite3.DatabaseError as err:
            raise ResultsError(
                f"{self.path} is not a calderalab results database ({err}); pass another --db path"
            ) from None

    def __enter__(self) -> "ResultsDB":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _transaction(self, crash_point: str | None = None) -> Iterator[None]:
        """One write transaction: all its rows commit together or none do.

        BEGIN IMMEDIATE takes the write lock up front, so a second writer waits (busy timeout)
        instead of failing on a lock upgrade; a process killed before COMMIT leaves nothing
        (WAL frames without a commit record are ignored by every reader and by recovery).
        `crash_point` names the fault-injection point just before COMMIT (see faults.py).
        """
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            if crash_point:
                faults.point(crash_point)
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:  # some errors (SQLITE_FULL) have rolled back already
                self._conn.execute("ROLLBACK")
            raise

    def _tables(self) -> set[str]:
        return {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table','view')")}

    def _check_or_create(self) -> None:
        tables = self._tables()
        if not tables:
            # Re-checked under the write lock: two processes opening a new file at once must not
            # both see it empty and both create the schema.
            with self._transaction():
                if not self._tables():
                    for statement in _SCHEMA.split(";\n"):
                        if statement.strip():
                            self._conn.execute(statement)
                    rows = [("app", APP_ID), ("schema_version", str(SCHEMA_VERSION))]
                    self._conn.executemany("INSERT INTO schema_info VALUES (?, ?)", rows)
                    log.info("created results database %s (schema v%d)", self.path, SCHEMA_VERSION)
            tables = self._tables()
        info = dict(self._conn.execute("SELECT key, value FROM schema_info")) if "schema_info" in tables else {}
        if info.get("app") != APP_ID:
            raise ResultsError(
                f"{self.path} is an SQLite file but not a calderalab results database "
                f"(tables: {sorted(tables)[:6]}); pass another --db path"
            )
        version = int(info.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            raise ResultsError(
                f"{self.path} has results schema v{version}, newer than this calderalab understands "
                f"(v{SCHEMA_VERSION}); upgrade calderalab to read it"
            )
        if version == 1:  # v1 -> v2: one nullable column; old runs simply have no choice details
            with self._transaction():  # re-checked under the write lock: another process may have upgraded it
                columns = {r[1] for r in self._conn.execute("PRAGMA table_info(outcomes)")}
                if "detail_json" not in columns:
                    self._conn.execute("ALTER TABLE outcomes ADD COLUMN detail_json TEXT")
                self._conn.execute("UPDATE schema_info SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            log.info("upgraded results database %s from schema v1 to v%d", self.path, SCHEMA_VERSION)
        elif version < SCHEMA_VERSION:
            raise ResultsError(f"{self.path} has an unknown old results schema v{version}; pass a new --db path")

    # ------------------------------------------------------------------ writing

    def add_run(self, record: RunRecord, results: Sequence[ProbeResult], instances: Sequence[Instance]) -> int:
        """Store one run (record, its instances and every probe outcome) in one transaction; return its id.

        Every instance must have both probes: a partial run is refused rather than stored.
        """
        results = list(results)
        join_probe_results(instances, results)  # validates completeness, raises ValueError naming gaps
        family = {inst.uid: inst.family for inst in instances}
        r = record
        with self._transaction(crash_point="results_commit"):
            cur = self._conn.execute(
                "INSERT INTO runs (created_at, experiment, label, config_json, model_ref, model_fingerprint,"
                " artifacts_manifest_hash, protected_layers, plan_hash, suite, n_requested, n_instances, seeds,"
                " scoring, decoding_json, tool_version, git_sha, outcomes_hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _now(), r.experiment, r.label, json.dumps(r.config, sort_keys=True), r.model_ref,
                    r.model_fingerprint, r.artifacts_manifest_hash, json.dumps(list(r.protected_layers)),
                    r.plan_hash, r.suite, r.n_requested, len(instances), json.dumps(list(r.seeds)), r.scoring,
                    json.dumps(r.decoding, sort_keys=True), r.tool_version, r.git_sha, outcomes_hash(results),
                ),
            )
            run_id = int(cur.lastrowid)
            self._conn.executemany(
                "INSERT INTO run_instances VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (run_id, i.uid, pos, i.family, i.index, i.seed, i.answer, i.answer_type, i.n_steps, int(i.canonical))
                    for pos, i in enumerate(instances)
                ],
            )
            self._conn.executemany(
                "INSERT INTO outcomes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (run_id, p.instance_uid, family[p.instance_uid], p.probe, p.scoring, int(p.correct), p.parsed,
                     p.raw_output, int(p.truncated), None if p.detail is None else json.dumps(p.detail.to_dict()))
                    for p in results
                ],
            )
        log.info("stored run %d (%s, %d instances) in %s", run_id, r.label, len(instances), self.path)
        return run_id

    # ------------------------------------------------------------------ reading

    def _resolve_id(self, run_id: int | str) -> int:
        if isinstance(run_id, str) and run_id.strip().lower() in ("last", "latest"):
            row = self._conn.execute("SELECT MAX(id) FROM runs").fetchone()
            if row[0] is None:
                raise ResultsError(f"{self.path} holds no runs yet; run `calderalab eval` first")
            return int(row[0])
        try:
            rid = int(run_id)
        except (TypeError, ValueError):
            raise ResultsError(
                f"run id {run_id!r} is not a number; `calderalab runs --db {self.path}` lists the stored runs"
            ) from None
        if self._conn.execute("SELECT 1 FROM runs WHERE id = ?", (rid,)).fetchone() is None:
            raise ResultsError(f"no run {rid} in {self.path}; `calderalab runs --db {self.path}` lists the stored runs")
        return rid

    def _row_to_run(self, row: sqlite3.Row | tuple) -> StoredRun:
        (rid, created, experiment, label, config, model_ref, fingerprint, art_hash, protected, plan_hash, suite,
         n_req, n_inst, seeds, scoring, decoding, tool_version, git_sha, o_hash) = row
        record = RunRecord(
            model_ref=model_ref, scoring=scoring, suite=suite, seeds=tuple(json.loads(seeds)), n_requested=n_req,
            model_fingerprint=fingerprint, artifacts_manifest_hash=art_hash,
            protected_layers=tuple(json.loads(protected)), plan_hash=plan_hash, decoding=json.loads(decoding),
            label=label, config=json.loads(config), experiment=experiment, tool_version=tool_version,
            git_sha=git_sha,
        )
        return StoredRun(int(rid), created, int(n_inst), o_hash, record)

    def get_run(self, run_id: int | str) -> StoredRun:
        rid = self._resolve_id(run_id)
        return self._row_to_run(self._conn.execute("SELECT * FROM runs WHERE id = ?", (rid,)).fetchone())

    def list_runs(self, experiment: str | None = None) -> list[StoredRun]:
        """All runs (oldest first), or only those of one experiment."""
        if experiment is None:
            rows = self._conn.execute("SELECT * FROM runs ORDER BY id").fetchall()
        else:
            rows = self._conn.execute("SELECT * FROM runs WHERE experiment = ? ORDER BY id", (experiment,)).fetchall()
        return [self._row_to_run(r) for r in rows]

    def outcomes(self, run_id: int | str) -> list[ProbeResult]:
        """Every probe outcome of a run, in the run's instance order (execution before understanding)."""
        rid = self._resolve_id(run_id)
        rows = self._conn.execute(
            "SELECT o.instance_uid, o.probe, o.scoring, o.correct, o.parsed, o.raw_output, o.truncated, o.detail_json"
            " FROM outcomes o JOIN run_instances i ON i.run_id = o.run_id AND i.uid = o.instance_uid"
            " WHERE o.run_id = ? ORDER BY i.position, o.probe",
            (rid,),
        ).fetchall()
        return [ProbeResult(u, p, s, bool(c), parsed, raw, bool(t), None if d is None else ChoiceDetail.from_dict(json.loads(d)))
                for u, p, s, c, parsed, raw, t, d in rows]

    def instances(self, run_id: int | str) -> list[Instance]:
        """The instances of a run, as far as stored (identity, family and answer; not the prompt text)."""
        rid = self._resolve_id(run_id)
        rows = self._conn.execute(
            "SELECT family, instance_index, instance_seed, answer, answer_type, n_steps, canonical"
            " FROM run_instances WHERE run_id = ? ORDER BY position",
            (rid,),
        ).fetchall()
        return [
            Instance(family=f, index=i, seed=s, question="", answer=a, answer_type=t, tolerance=0.0, n_steps=n,
                     canonical=bool(c))
            for f, i, s, a, t, n, c in rows
        ]

    def run_outcomes(self, run_id: int | str) -> RunOutcomes:
        """Per-instance outcomes of a run, labelled for the report tables."""
        run = self.get_run(run_id)
        joined = join_probe_results(self.instances(run.run_id), self.outcomes(run.run_id))
        bits = run.record.config.get("bits", "-") if run.record.artifacts_manifest_hash else "-"
        return RunOutcomes(run.display_label, run.record.protected_label, joined, bits=str(bits))

    def paired(self, run_a: int | str, run_b: int | str) -> tuple[RunOutcomes, RunOutcomes]:
        """Two runs restricted to their common instances, aligned by uid (in run_a's order).

        Logs a warning when the instance sets differ; raises when nothing is shared.
        """
        a, b = self.run_outcomes(run_a), self.run_outcomes(run_b)
        oa, ob = align(a, b)
        if len(oa) != a.n or len(ob) != b.n:
            log.warning("runs %s and %s share %d of %d/%d instances; comparing those", run_a, run_b, len(oa), a.n, b.n)
        return dataclasses.replace(a, outcomes=oa), dataclasses.replace(b, outcomes=ob)
