import sqlite3

import pytest

from calderalab.errors import ResultsError
from calderalab.eval.types import Instance, ProbeResult
from calderalab.results import ResultsDB
from calderalab.run_record import RunRecord, format_layers


def _instances(n=4, seed=0):
    fams = ["discount_coupon", "time_duration"]
    return [
        Instance(family=fams[i % 2], index=i // 2, seed=seed, question=f"q{i}", answer=str(10 + i),
                 answer_type="number", tolerance=0.0, n_steps=3, canonical=(seed == 0 and i < 2),
                 plan_options=("plan a", "plan b"))
        for i in range(n)
    ]


def _results(instances, executed, understood, scoring="choice"):
    out = []
    for inst, e, u in zip(instances, executed, understood):
        out.append(ProbeResult(inst.uid, "execution", scoring, e, inst.answer if e else "99", f"exec {inst.uid}"))
        out.append(ProbeResult(inst.uid, "understanding", scoring, u, "A" if u else "B", "[-1.0, -2.0]"))
    return out


def _record(**kw):
    base = dict(model_ref="smollm2", scoring="choice", seeds=(0,), n_requested=4, label="baseline",
                decoding={"temperature": 0.0}, experiment="exp1")
    base.update(kw)
    return RunRecord(**base)


def test_round_trip(tmp_path):
    insts = _instances()
    res = _results(insts, [True, False, True, False], [True, True, False, False])
    with ResultsDB(tmp_path / "runs.sqlite") as db:
        rid = db.add_run(_record(), res, insts)
        run = db.get_run(rid)
        assert run.run_id == rid and run.n_instances == 4
        assert run.record == _record()
        assert db.outcomes(rid) == sorted(res, key=lambda r: ([i.uid for i in insts].index(r.instance_uid), r.probe))
        back = db.instances(rid)
        assert [(i.uid, i.answer, i.canonical) for i in back] == [(i.uid, i.answer, i.canonical) for i in insts]
        ro = db.run_outcomes(rid)
        assert [o.verdict.value for o in ro.outcomes] == ["PASS", "GAP", "LUCKY", "FAIL"]
        assert ro.protected == "All" and ro.label == "baseline"
        assert ro.outcomes[1].executed_parsed == "99"
    # reopening the same file sees the run, and the verdicts view agrees
    with ResultsDB(tmp_path / "runs.sqlite") as db:
        assert [r.run_id for r in db.list_runs()] == [rid]
    conn = sqlite3.connect(tmp_path / "runs.sqlite")
    rows = conn.execute("SELECT instance_uid, verdict FROM verdicts WHERE run_id = ? ORDER BY instance_uid", (rid,))
    assert dict(rows) == {insts[0].uid: "PASS", insts[1].uid: "GAP", insts[2].uid: "LUCKY", insts[3].uid: "FAIL"}
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_ids_unique_hash_tracks_outcomes_and_experiment_filter(tmp_path):
    insts = _instances()
    res = _results(insts, [True] * 4, [True] * 4)
    with ResultsDB(tmp_path / "r.sqlite") as db:
        a = db.add_run(_record(), res, insts)
        b = db.add_run(_record(label="again"), res, insts)
        c = db.add_run(_record(experiment="other"), _results(insts, [False] * 4, [True] * 4), insts)
        assert len({a, b, c}) == 3
        assert db.get_run(a).outcomes_hash == db.get_run(b).outcomes_hash != db.get_run(c).outcomes_hash
        assert [r.run_id for r in db.list_runs("exp1")] == [a, b]
        assert db.get_run("last").run_id == c


def test_partial_run_is_refused_and_nothing_stored(tmp_path):
    insts = _instances()
    res = _results(insts, [True] * 4, [True] * 4)[:-1]  # last understanding probe missing
    with ResultsDB(tmp_path / "r.sqlite") as db:
        with pytest.raises(ValueError, match="missing probe results"):
            db.add_run(_record(), res, insts)
        assert db.list_runs() == []


def test_unknown_run_id_names_the_fix(tmp_path):
    with ResultsDB(tmp_path / "r.sqlite") as db:
        with pytest.raises(ResultsError, match=r"no run 7 in .*calderalab runs --db"):
            db.get_run(7)
        with pytest.raises(ResultsError, match="not a number"):
            db.get_run("abc")
        with pytest.raises(ResultsError, match="no runs yet"):
            db.get_run("last")


def test_foreign_sqlite_and_non_sqlite_files_are_refused(tmp_path):
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(ResultsError, match="not a calderalab results database"):
        ResultsDB(other)
    text = tmp_path / "notes.sqlite"
    text.write_text("hello, this is not a database at all" * 50)
    with pytest.raises(ResultsError, match="not a calderalab results database"):
        ResultsDB(text)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "r.sqlite"
    ResultsDB(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_info SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(ResultsError, match="schema v99, newer"):
        ResultsDB(path)


def test_v1_database_is_upgraded_in_place_and_keeps_its_runs(tmp_path):
    path = tmp_path / "r.sqlite"
    insts = _instances(2)
    with ResultsDB(path) as db:
        run_id = db.add_run(_record(), _results(insts, [True, False], [True, True]), insts)
        before = [(r.instance_uid, r.probe, r.correct) for r in db.outcomes(run_id)]
    conn = sqlite3.connect(path)  # make it a v1 file: no detail_json column
    conn.execute("ALTER TABLE outcomes DROP COLUMN detail_json")
    conn.execute("UPDATE schema_info SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with ResultsDB(path) as db:
        assert [(r.instance_uid, r.probe, r.correct) for r in db.outcomes(run_id)] == before and len(before) == 4
        assert all(r.detail is None for r in db.outcomes(run_id))
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM schema_info WHERE key = 'schema_version'").fetchone() == ("2",)
    assert "detail_json" in {r[1] for r in conn.execute("PRAGMA table_info(outcomes)")}
    conn.close()


def test_paired_aligns_by_uid(tmp_path):
    insts = _instances(6)
    with ResultsDB(tmp_path / "r.sqlite") as db:
        a = db.add_run(_record(), _results(insts, [True, False] * 3, [True] * 6), insts)
        sub = list(reversed(insts[1:5]))  # a subset, in another order
        b = db.add_run(
            _record(label="3-bit uniform", artifacts_manifest_hash="abc", protected_layers=(), config={"bits": 3}),
            _results(sub, [True] * 4, [False] * 4),
            sub,
        )
        ra, rb = db.paired(a, b)
        assert [o.uid for o in ra.outcomes] == [o.uid for o in rb.outcomes] == [i.uid for i in insts[1:5]]
        assert [o.executed for o in ra.outcomes] == [False, True, False, True]
        assert all(o.executed for o in rb.outcomes)
        assert rb.protected == "None" and rb.bits == "3"
        other = [Instance("x", 0, 9, "q", "1", "number", 0.0, 1)]
        c = db.add_run(_record(), _results(other, [True], [True]), other)
        with pytest.raises(ValueError, match="share no instance"):
            db.paired(a, c)


def test_record_validation_and_layer_format():
    with pytest.raises(ValueError, match="scoring"):
        _record(scoring="sample")
    with pytest.raises(ValueError, match="JSON"):
        _record(decoding={"x": object()})
    assert format_layers((27, 23, 24, 25, 70)) == "23-25,27,70"
    assert _record(artifacts_manifest_hash="h", protected_layers=tuple(range(70, 80))).protected_label == "70-79"


def test_execution_only_instances_round_trip(tmp_path):
    # GSM8K rows carry no plan options: execution only, no verdict.
    insts = [Instance("gsm8k", i, 0, "q", str(i), "number", 0.0, 2) for i in range(3)]
    res = [ProbeResult(i.uid, "execution", "generate", i.index != 1, i.answer, "…") for i in insts]
    with ResultsDB(tmp_path / "r.sqlite") as db:
        rid = db.add_run(_record(scoring="generate"), res, insts)
        ro = db.run_outcomes(rid)
    assert [o.understood for o in ro.outcomes] == [None] * 3
    assert (ro.n_probed, ro.n_executed) == (0, 2)
    conn = sqlite3.connect(tmp_path / "r.sqlite")
    assert {v for (v,) in conn.execute("SELECT verdict FROM verdicts")} == {None}


def test_comparability_notes(tmp_path):
    from calderalab.run_record import comparability_notes

    insts = _instances()
    res = _results(insts, [True] * 4, [True] * 4)
    with ResultsDB(tmp_path / "r.sqlite") as db:
        a = db.get_run(db.add_run(_record(model_fingerprint="aa"), res, insts))
        b = db.get_run(db.add_run(_record(model_fingerprint="bb", scoring="generate"), res, insts))
        c = db.get_run(db.add_run(_record(model_fingerprint="aa"), _results(insts, [False] * 4, [True] * 4), insts))
    notes = comparability_notes(a, b)
    assert any("different base weights" in n for n in notes)
    assert any("differ in scoring: choice vs generate" in n for n in notes)
    assert any("identical outcomes" in n for n in notes)
    assert comparability_notes(a, c) == []


def test_detect_git_sha(tmp_path):
    import re

    from calderalab.run_record import detect_git_sha

    sha = detect_git_sha()  # the test suite runs from a checkout: src/calderalab is this package
    assert sha is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", sha)
    assert detect_git_sha(tmp_path) is None  # not a calderalab checkout
