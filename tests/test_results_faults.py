"""The results database under real faults: two writer processes at once, and SIGKILL mid-write.

Each writer is a real `python` subprocess (no threads, no mocks): SQLite's locking and WAL
recovery are what is being tested. A run counts as whole when its instance rows, both probes
of every instance and its stored outcomes hash all agree with what the writer meant to store.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import calderalab
from calderalab.results import ResultsDB, outcomes_hash

SRC = str(Path(calderalab.__file__).resolve().parents[1])

# Writes `n_runs` runs (forever when 0) of `n_inst` instances labelled WRITER-i into DB, printing
# each committed run id; waits for GO (a file) first so that several writers start together.
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from calderalab.eval.types import Instance, ProbeResult
    from calderalab.results import ResultsDB
    from calderalab.run_record import RunRecord

    db_path, writer, n_runs, n_inst, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    while not Path(go).exists():
        time.sleep(0.005)
    i = 0
    while n_runs == 0 or i < n_runs:
        insts = [Instance(family="f", index=k, seed=i, question="q", answer=str(k), answer_type="number",
                          tolerance=0.0, n_steps=2) for k in range(n_inst)]
        res = [ProbeResult(x.uid, p, "choice", (k + i) % 3 == 0, "A", f"{writer} {i} {k} " + "x" * 200)
               for k, x in enumerate(insts) for p in ("execution", "understanding")]
        with ResultsDB(db_path) as db:
            run_id = db.add_run(RunRecord(model_ref="m", scoring="choice", label=f"{writer}-{i}"), res, insts)
        print(run_id, flush=True)
        i += 1
""")


def _writer(db: Path, name: str, n_runs: int, n_inst: int, go: Path, fault: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("CALDERALAB_FAULT", None)
    if fault:
        env["CALDERALAB_FAULT"] = fault
    return subprocess.Popen([sys.executable, "-c", WRITER, str(db), name, str(n_runs), str(n_inst), str(go)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _check_every_run_whole(db_path: Path) -> list[str]:
    """Labels of the stored runs, after checking each one reads back whole and nothing dangles."""
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for table in ("outcomes", "run_instances"):  # no rows of a run that never committed
        orphans = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE run_id NOT IN (SELECT id FROM runs)").fetchone()[0]
        assert orphans == 0, table
    conn.close()
    labels = []
    with ResultsDB(db_path) as db:
        for run in db.list_runs():
            outcomes = db.outcomes(run.run_id)
            assert len(db.instances(run.run_id)) == run.n_instances
            assert len(outcomes) == 2 * run.n_instances
            assert outcomes_hash(outcomes) == run.outcomes_hash
            assert db.run_outcomes(run.run_id).n == run.n_instances
            labels.append(run.record.label)
    return labels


def test_two_writer_processes_on_a_new_file_both_succeed(tmp_path):
    db, go = tmp_path / "runs.sqlite", tmp_path / "go"
    writers = [_writer(db, name, 12, 40, go) for name in ("a", "b")]
    time.sleep(0.5)  # both interpreters up and polling
    go.touch()
    for w in writers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
        assert len(out.split()) == 12, (out, err)
    labels = _check_every_run_whole(db)
    assert sorted(labels) == sorted(f"{name}-{i}" for name in ("a", "b") for i in range(12)), labels


def test_kill_just_before_commit_leaves_exactly_the_committed_runs(tmp_path):
    db, go = tmp_path / "runs.sqlite", tmp_path / "go"
    go.touch()
    writer = _writer(db, "w", 5, 50, go, fault="results_commit:3")  # runs 0 and 1 commit, run 2 dies
    out, _ = writer.communicate(timeout=60)
    assert writer.returncode == -signal.SIGKILL
    assert out.split() == ["1", "2"]
    assert _check_every_run_whole(db) == ["w-0", "w-1"]
    with ResultsDB(db) as store:  # the file takes new runs after the crash
        assert [r.run_id for r in store.list_runs()] == [1, 2]
    again = _writer(db, "v", 1, 5, go)
    assert again.communicate(timeout=60)[0].split() == ["3"]
    assert _check_every_run_whole(db) == ["w-0", "w-1", "v-0"]


def test_writer_killed_mid_loop_loses_no_committed_run(tmp_path):
    db, go = tmp_path / "runs.sqlite", tmp_path / "go"
    go.touch()
    writer = _writer(db, "w", 0, 400, go)  # big runs: the kill most likely lands inside a transaction
    committed = []
    while len(committed) < 3:
        line = writer.stdout.readline()
        assert line, writer.stderr.read()
        committed.append(int(line))
    time.sleep(0.05)
    writer.send_signal(signal.SIGKILL)
    rest, _ = writer.communicate(timeout=60)
    committed += [int(x) for x in rest.split()]
    labels = _check_every_run_whole(db)
    # every run the writer saw committed is there; at most the one it had not yet reported besides
    assert labels[: len(committed)] == [f"w-{i}" for i in range(len(committed))]
    assert len(labels) - len(committed) in (0, 1)
