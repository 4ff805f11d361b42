"""Real crashes of a real compression: SIGKILL at chosen points, then resume to identical bytes.

A `python -m calderalab compress` subprocess on a tiny 3-layer Llama (saved to a temp dir) is
killed with a real SIGKILL by the fault hook (calderalab/faults.py, CALDERALAB_FAULT=POINT:N) at
a deterministic point: during Hessian capture, mid-decomposition, halfway through writing a
module file, halfway through writing manifest.json or an entry sidecar. Then:
1. the store as the crash left it reads back with only whole modules (checksums verified; the
   half-written temp file is there on disk, and no reader touches it);
2. the same command again, without the variable, finishes the job; every module file and entry
   is byte-identical to an uninterrupted run's, manifest.json differs at most in its creation
   time, and no temp file is left.
One more crash runs against a real local S3 server (moto), resumed into the same bucket.
Work per layer (in order): capture layer l, decompose its 7 modules, then store layer l-1.
LDLQ at 4 bits on a 32-wide model: the interpreter start-up is most of each run's cost.
"""

from __future__ import annotations

import signal

import pytest
from helpers_cli import N_MODULES, assert_same_artifacts, compress_args, readable_modules, start_killed, temp_files
from typer.testing import CliRunner

from calderalab.cli import app

# (fault, modules whole after the kill, the half-written temp file's folder or None)
CASES = [
    ("hessian:3", 7, None),  # capturing layer 2: layer 0 stored, layer 1 decomposed in memory
    ("decompose:17", 7, None),  # layer 2's 3rd module: layer 0 stored, layer 1 not yet
    ("module_write:10", 9, "modules"),  # layer 1's 3rd module file half written
    ("manifest_write:12", 10, "entries"),  # header + 10 entries whole; the 11th entry half written
    ("manifest_write:1", 0, "."),  # the store header itself half written
]


S3_FAULT = "module_write:10"  # on an object store: just before the 10th module's PUT


@pytest.fixture(scope="module")
def s3():
    """(the AWS_* variables that point a process at a real local S3 server (moto), an s3fs client, a bucket)."""
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]},
                           skip_instance_cache=True)
    fs.mkdir("faults")
    yield env, fs, "faults"
    server.stop()


@pytest.fixture(scope="module")
def crashed(tmp_path_factory, s3, tiny_compressed):
    """(args builder, reference store, {fault: crashed store}); "s3" maps to an s3:// store.

    One `compress` subprocess per fault, all started at once (the interpreter start-up dominates,
    so they overlap), one thread each; the uninterrupted reference ran in the test process with its
    default threads for the Hessian capture (so the byte comparison also spans thread counts there) and
    `--threads 1` for the decompositions, as the resumes do (a module of another count is recomputed).
    """
    root = tmp_path_factory.mktemp("faults")
    model, calib, reference = tiny_compressed
    args = lambda out: compress_args(model, calib, out)  # noqa: E731
    stores = {fault: root / f"store-{i}" for i, (fault, _, _) in enumerate(CASES)}
    procs = {fault: start_killed(args(out), fault) for fault, out in stores.items()}
    stores["s3"] = f"s3://{s3[2]}/store"
    procs["s3"] = start_killed(args(stores["s3"]), S3_FAULT, extra_env=s3[0])
    for fault, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, f"not killed at {fault}: rc {proc.returncode}\n{err[-2000:]}"
    return args, reference, stores


@pytest.mark.parametrize("fault, n_whole, temp_dir", CASES, ids=[c[0] for c in CASES])
def test_kill_then_resume_gives_identical_artifacts(crashed, fault, n_whole, temp_dir):
    args, reference, stores = crashed
    out = stores[fault]
    temps = temp_files(out)
    if temp_dir is None:
        assert temps == []
    else:
        (temp,) = temps
        assert temp.parent == out / temp_dir
        final_name = temp.name.split("-", 4)[-1]  # .tmp-<pid>-<host>-<random>-<name>
        whole = (reference / temp_dir / final_name).read_bytes()
        assert temp.read_bytes() == whole[: len(whole) // 2]  # really half on disk
    assert readable_modules(out) == n_whole

    result = CliRunner().invoke(app, args(out))
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"{n_whole} already stored" in result.output
    assert temp_files(out) == []  # the dead writer's temp file was removed
    assert_same_artifacts(out, reference)
    assert readable_modules(out) == N_MODULES


def test_kill_then_resume_on_object_storage(crashed, s3, monkeypatch):
    """The same against a real local S3 server: no object is ever partial (a PUT is atomic), and the
    resumed store holds the reference's bytes."""
    import s3fs

    args, reference, stores = crashed
    env, fs, bucket = s3
    prefix = f"{bucket}/store"
    fs.invalidate_cache()
    assert len(fs.find(f"{prefix}/modules")) == len(fs.find(f"{prefix}/entries")) == 9

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    result = CliRunner().invoke(app, args(stores["s3"]))
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "9 already stored" in result.output
    fs.invalidate_cache()
    got = {path[len(prefix) + 1 :]: fs.cat_file(path) for path in fs.find(prefix)}
    want = {str(p.relative_to(reference)): p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    assert sorted(got) == sorted(want)
    assert all(got[name] == want[name] for name in want if name != "manifest.json")


def test_fault_spec_is_checked():
    from calderalab import faults

    assert faults.parse("module_write:2") == ("module_write", 2)
    for bad in ("module_write", "module_write:0", "disk:1", "hessian:x"):
        with pytest.raises(ValueError, match="CALDERALAB_FAULT"):
            faults.parse(bad)
