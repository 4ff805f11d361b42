"""Object storage end to end, through the CLI, against a real local S3 server that checks credentials.

The server (moto in its own process, tests/helpers_s3.py) is reached the way any AWS tool
reaches it: the endpoint and keys are only in AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE,
no calderalab option names them. On a tiny 4-layer Llama (sensitivity needs 4 layers):
1. `compress --out s3://…` is killed with a real SIGKILL just before an entry's PUT (the
   module's file is in the bucket, its entry is not), then the same command resumes into the
   bucket; every object is byte-identical to an uninterrupted local run's;
2. `validate`, `eval --artifacts` and `sensitivity --artifacts` read the bucket (eval records the
   local reference's manifest hash), and `ppl --artifacts` and `export` give exactly what they give
   from the local store;
3. a denied write in a real process is one line on stderr, before the model loads.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid

import pytest
import s3fs
from helpers_cli import SRC, calibration_text, compress_args, run_main, start_killed, tiny_checkpoint
from helpers_s3 import AWS_VARIABLES, BUCKET, s3_client
from typer.testing import CliRunner

from calderalab.cli import app

FAULT = "manifest_write:12"  # on an object store: just before the 12th header/entry PUT (header + 10 entries whole)


def _objects(fs, prefix: str) -> dict[str, bytes]:
    fs.invalidate_cache()
    return {path[len(prefix) + 1 :]: fs.cat_file(path) for path in fs.find(prefix)}


@pytest.fixture(scope="module")
def stores(tmp_path_factory, local_s3):
    """(model, calibration, local reference store, s3 URL of the killed-then-resumed store, resume output)."""
    root = tmp_path_factory.mktemp("s3-e2e")
    model, calib = tiny_checkpoint(root, n_layers=4), calibration_text(root)
    reference = root / "reference"
    done = CliRunner().invoke(app, compress_args(model, calib, reference))
    assert done.exit_code == 0, done.output + repr(done.exception)
    url = f"s3://{BUCKET}/e2e-{uuid.uuid4().hex[:8]}/store"
    proc = start_killed(compress_args(model, calib, url), FAULT, base_env=local_s3.process_env())
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == -signal.SIGKILL, f"not killed: rc {proc.returncode}\n{err[-2000:]}"
    killed = _objects(s3_client(local_s3), url[5:])
    assert (sum(k.startswith("entries/") for k in killed), sum(k.startswith("modules/") for k in killed)) == (10, 11)
    with pytest.MonkeyPatch.context() as env:
        for name in AWS_VARIABLES:
            env.delenv(name, raising=False)
        for name, value in local_s3.env().items():
            env.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()
        resumed = CliRunner().invoke(app, compress_args(model, calib, url))
    s3fs.S3FileSystem.clear_instance_cache()
    assert resumed.exit_code == 0, resumed.output + repr(resumed.exception)
    return model, calib, reference, url, resumed.output


def test_kill_then_resume_into_a_bucket_gives_the_uninterrupted_bytes(stores, local_s3):
    model, calib, reference, url, output = stores
    assert "28 modules, 10 already stored, 18 to do" in output
    got = _objects(s3_client(local_s3), url[5:])
    want = {str(p.relative_to(reference)): p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    assert sorted(got) == sorted(want)  # the write probe left nothing behind
    assert all(got[name] == want[name] for name in want if name != "manifest.json")
    header = lambda data: {k: v for k, v in json.loads(data).items() if k != "created"}  # noqa: E731
    assert header(got["manifest.json"]) == header(want["manifest.json"])


def test_validate_reads_the_bucket(stores, aws_env, capsys):
    model, _, _, url, _ = stores
    code, out, err = run_main(["validate", str(model), url, "--no-replacement"], capsys)
    assert code == 0, out + err
    assert "28 modules" in out and "validation passed" in out


def test_eval_applies_the_modules_from_the_bucket(stores, aws_env, tmp_path, capsys):
    """The run records the bucket's URL and its manifest's content hash, whose entries are the local reference's."""
    from calderalab.artifacts import ArtifactStore
    from calderalab.results import ResultsDB

    model, _, reference, url, _ = stores
    db_path = tmp_path / "runs.sqlite"
    code, out, err = run_main(["eval", str(model), "--canonical", "--artifacts", url, "--db", str(db_path)], capsys)
    assert code == 0, out + err
    with ResultsDB(db_path) as db:
        (run,) = db.list_runs()
    assert run.record.config["artifacts"] == url and run.record.config["n_modules_compressed"] == 28
    stored = ArtifactStore(url).manifest()
    assert run.record.artifacts_manifest_hash == stored.content_hash()
    assert stored.modules == ArtifactStore(str(reference)).manifest().modules  # the reference's entries


def test_sensitivity_profiles_the_modules_in_the_bucket(stores, aws_env, tmp_path, capsys):
    model, _, _, url, _ = stores
    args = ["sensitivity", str(model), "--artifacts", url, "--samples", "2", "--max-new-tokens", "4",
            "--out", str(tmp_path / "sens")]
    code, out, err = run_main(args, capsys)
    assert code == 0, out + err
    profile = json.loads((tmp_path / "sens" / "profile.json").read_text())
    assert profile["settings"]["artifacts"] == url and len(profile["rows"]) == 4
    assert (profile["settings"]["spec"]["bits"], profile["settings"]["spec"]["method"]) == (4, "ldlq")  # the store's


def test_ppl_and_export_from_the_bucket_equal_the_local_store(stores, aws_env, tmp_path, capsys):
    model, calib, reference, url, _ = stores
    window = ["--data", str(calib), "--context", "32", "--stride", "16", "--max-tokens", "120",
              "--reference-cache", str(tmp_path / "ref")]
    lines = {}
    for name, store in (("s3", url), ("local", str(reference))):
        code, out, err = run_main(["ppl", str(model), *window, "--artifacts", store], capsys)
        assert code == 0, out + err
        lines[name] = out
        code, out, err = run_main(["export", str(model), store, "--out", str(tmp_path / f"hf-{name}")], capsys)
        assert code == 0, out + err
    assert lines["s3"] == lines["local"] and "KL(original ‖ compressed)" in lines["s3"]
    weights = lambda d: {p.name: p.read_bytes() for p in sorted(d.glob("*.safetensors"))}  # noqa: E731
    assert weights(tmp_path / "hf-s3") == weights(tmp_path / "hf-local") != {}
    provenance = json.loads((tmp_path / "hf-s3" / "calderalab_provenance.json").read_text())
    assert provenance["artifacts"] == url


def test_a_denied_write_is_one_line_before_the_model_loads(stores, local_s3):
    """A real process, the endpoint from the config file only, the read-only profile: exit 2, one line."""
    model, calib, _, _, _ = stores
    url = f"s3://{BUCKET}/denied-{uuid.uuid4().hex[:8]}"
    env = local_s3.process_env(AWS_PROFILE="reader", PYTHONPATH=SRC)
    done = subprocess.run([sys.executable, "-m", "calderalab", *compress_args(model, calib, url)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: cannot write {url} (endpoint {local_s3.endpoint}): access denied (AccessDenied); use credentials "
        "allowed to write there (AWS_PROFILE / AWS_ACCESS_KEY_ID) or another store URL"]
    assert "loaded" not in done.stdout  # compress prints "loaded MODEL in …s" once the weights are in
    assert s3_client(local_s3).find(url[5:]) == []

