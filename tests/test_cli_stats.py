"""CLI `compare` and `runs` on a results database written through the library (no model needed)."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from calderalab.cli import app
from calderalab.experiments.options import eval_job
from calderalab.eval.types import Instance, ProbeResult
from calderalab.results import ResultsDB
from calderalab.run_record import RunRecord


def _store(path):
    insts = [Instance(f"fam{i % 3}", i // 3, 0, "q", str(i), "number", 0.0, 2, plan_options=("a", "b"))
             for i in range(12)]

    def results(executed):
        out = []
        for inst, e in zip(insts, executed):
            out.append(ProbeResult(inst.uid, "execution", "choice", e, inst.answer if e else "x", "[]"))
            out.append(ProbeResult(inst.uid, "understanding", "choice", True, "A", "[]"))
        return out

    with ResultsDB(path) as db:
        a = db.add_run(RunRecord("smollm2", "choice", label="Baseline"), results([True] * 12), insts)
        b = db.add_run(RunRecord("smollm2", "choice", label="3-bit uniform", artifacts_manifest_hash="h"),
                       results([True] * 2 + [False] * 10), insts)
    return a, b


def test_compare_and_runs(tmp_path):
    db = tmp_path / "runs.sqlite"
    a, b = _store(db)
    runner = CliRunner()
    out = runner.invoke(app, ["compare", str(a), str(b), "--db", str(db), "--n-boot", "500"])
    assert out.exit_code == 0, out.output
    # 10 discordant pairs all one way: exact p = 2·0.5^10
    assert "| 3-bit uniform (#2) vs Baseline (#1) | Execution | 12/12 | 2/12 | -83 [" in out.output
    assert "| 10/0 | 0.002 |" in out.output
    listing = runner.invoke(app, ["runs", "--db", str(db)])
    assert listing.exit_code == 0 and "3-bit uniform" in listing.output and "2/12" in listing.output


def test_compare_unknown_run_is_a_clean_error(tmp_path):
    db = tmp_path / "runs.sqlite"
    _store(db)
    proc = subprocess.run([sys.executable, "-m", "calderalab", "compare", "1", "9", "--db", str(db)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "no run 9" in proc.stderr and "calderalab runs --db" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(suite="gsm8k", n=5, data="x.jsonl"), "--scoring generate"),
        (dict(suite="mmlu"), "goodhart, ladder, canonical, gsm8k"),
        (dict(batch_size=0), "batch_size must be >= 1, got 0"),
        (dict(protect="23-27"), "--artifacts"),
        (dict(scoring="vote"), "choice, cloze, generate"),
        (dict(n=0), r"n must be > 0 \(--n, --n-per-family\)"),
        (dict(n=5, seeds="1,1"), "distinct"),
        (dict(seeds="0,x"), "--seeds must be comma-separated integers"),
        (dict(canonical=True, ladder=True), "pick one of --canonical, --ladder and --suite"),
    ],
)
def test_eval_job_validation(kwargs, match):
    """Every bad `calderalab eval` option fails while the job is built, before anything loads."""
    with pytest.raises(ValueError, match=match):
        eval_job("smollm2", **kwargs)


def test_views_are_library_functions(tmp_path):
    """What `compare` and `runs` print is built in report.run_views, reachable without the CLI."""
    from calderalab.report.run_views import compare_view, runs_view

    db = tmp_path / "runs.sqlite"
    a, b = _store(db)
    blocks = compare_view(db, str(a), [str(b)], n_boot=500)
    assert blocks[0][0] == "text" and blocks[0][1].startswith("| Config | Protected |")
    assert any(kind == "text" and "| 10/0 | 0.002 |" in text for kind, text in blocks)
    assert runs_view(tmp_path / "empty.sqlite") == [("text", f"no runs in {tmp_path / 'empty.sqlite'} yet; run `calderalab eval` first")]
    assert "3-bit uniform" in runs_view(db)[0][1]
