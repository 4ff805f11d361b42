"""Every bad input gives a clear one-line error: the README's table, run row by row through the CLI.

The rows are read from README.md ("Bad input and the error you get"), so the table and this test
cannot drift apart. Each command runs through `cli.main` in this process, as a user would run it
(its error handling included), on tiny models and files made here; it must exit non-zero, end in
no traceback, and print exactly the row's `error:` line. One row also runs as a real
`python -m calderalab` subprocess, to pin that the in-process run is what a user sees.
Rows on `s3://` URLs run against a real local S3 server that checks credentials (the `aws_env`
fixture: endpoint and keys in the AWS config files only); a command may start with shell-style
`VAR=value` assignments, set in the environment for that row.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_cli import error_lines, run_main, tiny_checkpoint

import calderalab

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Bad input and the error you get"
ENV_ASSIGNMENT = re.compile(r"[A-Z][A-Z0-9_]*=\S*")
WILDCARDS = {"<sha256>": r"[0-9a-f]{64}", "<hex12>": r"[0-9a-f]{12}", "<int>": r"\d+", "<spec_key>": r"[\w.-]+"}
PLACEHOLDER = re.compile(r"<[a-z0-9_]+>")


def _cell(text: str) -> str:
    """The content of a Markdown table cell written as a code span (`x` or ``x``)."""
    text = text.strip()
    ticks = len(text) - len(text.lstrip("`"))
    return text[ticks:-ticks].strip() if ticks else text


def readme_rows() -> list[tuple[str, str, str]]:
    """(bad input, command, error line) for every row of the README's bad-input table."""
    text = README.read_text(encoding="utf-8")
    body = text[text.index(SECTION) :].split("\n## ", 1)[0]
    rows = []
    for line in body.splitlines():
        if line.startswith("| ") and not line.startswith(("| bad input", "|---")):
            what, command, error = line.strip().strip("|").split(" | ")
            rows.append((what.strip(), _cell(command), _cell(error)))
    return rows


ROWS = readme_rows()
# Only these need the model's weights to find the fault (fingerprints, checksums of applied
# modules); every other row must fail before any weights are loaded.
NEEDS_WEIGHTS = {"artifacts of another model, applied", "artifacts of another model, resumed into",
                 "truncated artifact file", "bit-flipped artifact file"}


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_compressed) -> dict[str, str]:
    """Placeholder -> path of every file the table's commands name (except the per-test <tmp>)."""
    root = tmp_path_factory.mktemp("bad")
    model, calib, store = tiny_compressed
    other = tiny_checkpoint(root, seed=1)
    small = tiny_checkpoint(root, seed=0, n_layers=2)
    made = {"<model>": model, "<other>": other, "<small>": small, "<calib>": calib, "<store>": store,
            "<hf_cache>": root / "hf"}
    (root / "hf").mkdir()
    for name in ("truncated", "flipped", "newer"):
        shutil.copytree(store, root / name)
        made[f"<{name}>"] = root / name
    victim = next((root / "truncated" / "modules").glob("L001.up.*"))
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    victim = next((root / "flipped" / "modules").glob("L001.up.*"))
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0x10
    victim.write_bytes(bytes(data))
    header = json.loads((root / "newer" / "manifest.json").read_text())
    (root / "newer" / "manifest.json").write_text(json.dumps({**header, "format_version": 2, "tool_version": "9.0.0"}))
    made.update(_plan_and_task_files(root))
    (root / "notes.txt").write_text("these are my notes, not a database\n" * 20)
    made["<notes>"] = root / "notes.txt"
    foreign = sqlite3.connect(root / "foreign.sqlite")
    foreign.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    foreign.commit()
    foreign.close()
    made["<foreign_db>"] = root / "foreign.sqlite"
    return {k: str(v) for k, v in made.items()}


def _plan_and_task_files(root: Path) -> dict[str, Path]:
    plans = {
        "<plan_typo>": ("plan-typo.json", json.dumps({"base": {"method": "ldlq", "bitz": 3}})),
        "<plan_key_typo>": ("plan-key.yaml", "base: {method: ldlq, bits: 3}\nrulez: []\n"),
        "<plan_broken>": ("plan-broken.yaml", "base: {method: caldera, bits: 3 rank: 4\n"),
    }
    made = {}
    for key, (name, text) in plans.items():
        (root / name).write_text(text)
        made[key] = root / name
    tasks = root / "tasks"
    tasks.mkdir()
    family = (Path(calderalab.__file__).parent / "eval" / "tasks" / "families" / "discount_coupon.yaml").read_text()
    broken = family.replace("id: discount_coupon", "id: broken_coupon")
    broken = broken.replace('"price - discount"', '"price - discount +"')
    assert broken.count("price - discount +") == 1
    (tasks / "broken.yaml").write_text(broken)
    made["<tasks>"] = tasks
    return made


def _expected(template: str, values: dict[str, str]) -> re.Pattern:
    """The row's error line as a regex: named files substituted, varying values as wildcards."""
    parts, at = [], 0
    for m in PLACEHOLDER.finditer(template):
        parts.append(re.escape(template[at : m.start()]))
        token = m.group()
        if token in values:
            parts.append(re.escape(values[token]))
        elif token in WILDCARDS:
            parts.append(WILDCARDS[token])
        else:
            pytest.fail(f"README bad-input table uses unknown placeholder {token}")
        at = m.end()
    return re.compile("".join(parts) + re.escape(template[at:]))


def _substitute(command: str, values: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """(environment assignments, argv after `calderalab`) of a row's command."""
    for token in set(PLACEHOLDER.findall(command)):
        if token not in values:
            pytest.fail(f"README bad-input table uses unknown placeholder {token} in {command!r}")
    for token, value in values.items():
        command = command.replace(token, value)
    argv = shlex.split(command)
    env = {}
    while argv and ENV_ASSIGNMENT.fullmatch(argv[0]):
        name, value = argv.pop(0).split("=", 1)
        env[name] = value
    assert argv[0] == "calderalab", command
    return env, argv[1:]


def _object_store_values(request: pytest.FixtureRequest, command: str) -> dict[str, str]:
    """For a row on an s3:// URL: start pointing this process at the local S3 server; its placeholders."""
    if "s3://" not in command:
        return {}
    from helpers_s3 import BUCKET

    server = request.getfixturevalue("aws_env")
    return {"<bucket>": BUCKET, "<endpoint>": server.endpoint}


def test_table_covers_the_inputs_users_meet():
    kinds = " ".join(what for what, _, _ in ROWS)
    assert NEEDS_WEIGHTS <= {what for what, _, _ in ROWS}
    for kind in ("layer index", "bits out of range", "rank", "model path", "plan file", "task file", "another model",
                 "truncated", "bit-flipped", "newer format", "not SQLite", "bucket that does not exist", "write denied",
                 "credentials"):
        assert kind in kinds, f"the README's bad-input table has no row for: {kind}"


@pytest.mark.parametrize("what, command, error", ROWS, ids=[re.sub(r"\W+", "-", r[0]) for r in ROWS])
def test_bad_input_gives_its_one_line_error(what, command, error, files, tmp_path, monkeypatch, capsys, request):
    values = {**files, "<tmp>": str(tmp_path), **_object_store_values(request, command)}
    monkeypatch.setenv("HF_HUB_CACHE", files["<hf_cache>"])
    monkeypatch.chdir(tmp_path)
    if what not in NEEDS_WEIGHTS:
        from calderalab import models

        def load_model(*args, **kwargs):
            raise AssertionError(f"{what}: weights were loaded before the bad input was refused")

        monkeypatch.setattr(models, "load_model", load_model)
        monkeypatch.setattr(models, "open_model", load_model)  # compress opens checkpoints layer by layer
    env, argv = _substitute(command, values)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if env:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()  # a client is cached per storage options, not per environment
    code, stdout, stderr = run_main(argv, capsys)
    assert code != 0, f"{what}: exit code 0\n{stdout}"
    assert "Traceback" not in stdout + stderr
    lines = error_lines(stderr)
    assert len(lines) == 1, f"{what}: expected one error line, got {lines}\n{stderr[-2000:]}"
    assert _expected(error, values).fullmatch(lines[0]), f"{what}:\n got  {lines[0]}\n want {error}"


def test_a_subprocess_prints_the_same_line(files, tmp_path):
    """The in-process runs above stand for the real command: one row as a real subprocess."""
    (what, command, error) = next(r for r in ROWS if r[0] == "results file that is not SQLite")
    env = {**os.environ, "PYTHONPATH": str(Path(calderalab.__file__).parents[1])}
    argv = [sys.executable, "-m", "calderalab", *_substitute(command, {**files, "<tmp>": str(tmp_path)})[1]]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [error.replace("<notes>", files["<notes>"])]
