"""Who may read and write an object store, as s3fs/botocore decide it, and the one-line errors.

Against a real local S3 server that verifies signatures and enforces IAM policies (moto in its
own process, tests/helpers_s3.py). Credentials and the endpoint reach the store only through
the standard AWS chain: the config/credentials files (profiles), or the AWS_* variables.
"""

from __future__ import annotations

import uuid

import pytest
from helpers_s3 import BUCKET, s3_client

from calderalab.artifacts import ArtifactStore
from calderalab.errors import ArtifactError

HEADER = b'{"calibration": {}, "created": "x", "format_version": 1, "model": {"ref": "m"}, "tool_version": "0.1.0"}'


@pytest.fixture
def stored(aws_env):
    """An s3:// store holding only a header, written by the admin."""
    prefix = f"{BUCKET}/access-{uuid.uuid4().hex[:8]}"
    s3_client(aws_env).pipe_file(f"{prefix}/manifest.json", HEADER)
    return f"s3://{prefix}"


def _keys_only(monkeypatch, server, keys, endpoint_variable):
    """Drop the AWS files: keys and endpoint come from the variables alone."""
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(name, "/nonexistent")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys[1])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv(endpoint_variable, server.endpoint)


@pytest.mark.parametrize("source", ["config files", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE=reader"])
def test_credentials_and_endpoint_come_from_the_aws_chain(stored, aws_env, monkeypatch, source):
    if source.startswith("AWS_ENDPOINT_URL"):
        _keys_only(monkeypatch, aws_env, aws_env.admin, source)
    elif source == "AWS_PROFILE=reader":
        monkeypatch.setenv("AWS_PROFILE", "reader")
    store = ArtifactStore(stored)
    assert store.header().model == {"ref": "m"}
    if source != "AWS_PROFILE=reader":
        store.check_writable()
        assert [p for p in s3_client(aws_env).find(stored[5:])] == [f"{stored[5:]}/manifest.json"]  # probe removed


def test_a_read_only_user_cannot_write(stored, aws_env, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "reader")
    with pytest.raises(ArtifactError) as err:
        ArtifactStore(stored).check_writable()
    assert str(err.value) == (f"cannot write {stored} (endpoint {aws_env.endpoint}): access denied (AccessDenied); "
                              "use credentials allowed to write there (AWS_PROFILE / AWS_ACCESS_KEY_ID) or another store URL")


def test_unknown_keys_are_refused_on_read_and_write(stored, aws_env, monkeypatch):
    _keys_only(monkeypatch, aws_env, ("AKIAUNKNOWN0000000", "not-the-secret"), "AWS_ENDPOINT_URL")
    with pytest.raises(ArtifactError, match=r"the credentials were refused \(InvalidAccessKeyId\); set AWS_ACCESS_KEY_ID"):
        ArtifactStore(stored).check_writable()  # the PUT's reply names the code
    for read in (lambda s: s.header(), lambda s: s.exists()):  # these replies are a bare 403
        with pytest.raises(ArtifactError, match=r"access refused \(403: wrong credentials, or no permission\); check the"):
            read(ArtifactStore(stored))


def test_a_missing_bucket_is_named_on_read_and_write(aws_env):
    url = "s3://no-such-bucket-here/store"
    with pytest.raises(ArtifactError) as read:
        ArtifactStore(url).header()
    assert str(read.value) == (f"cannot read {url}: bucket 'no-such-bucket-here' does not exist at {aws_env.endpoint}; "
                               "check the URL and the endpoint (AWS_ENDPOINT_URL, or endpoint_url in ~/.aws/config)")
    with pytest.raises(ArtifactError) as write:
        ArtifactStore(url).check_writable()
    assert str(write.value).startswith(f"cannot write {url}: bucket 'no-such-bucket-here' does not exist at ")
    assert "aws s3 mb s3://no-such-bucket-here" in str(write.value)


def test_no_credentials_and_no_endpoint_are_one_line_errors(stored, aws_env, monkeypatch):
    import s3fs

    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(name, "/nonexistent")
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_env.endpoint)
    with pytest.raises(ArtifactError, match=r"no credentials found; set AWS_ACCESS_KEY_ID"):
        ArtifactStore(stored).header()
    _keys_only(monkeypatch, aws_env, aws_env.admin, "AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()  # a client is cached per storage options, not per environment
    with pytest.raises(ArtifactError, match=r"the endpoint does not answer \(EndpointConnectionError\)"):
        ArtifactStore(stored).header()


def test_a_local_store_that_cannot_be_written_is_named(tmp_path, monkeypatch):
    """A directory this user may not write (injected: the tests may run as root, who may write anywhere)."""
    from fsspec.implementations.local import LocalFileSystem

    def refuse(self, path, value, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(LocalFileSystem, "pipe_file", refuse)
    with pytest.raises(ArtifactError) as err:
        ArtifactStore(str(tmp_path / "store")).check_writable()
    assert str(err.value) == (f"cannot write {tmp_path}/store: permission denied (Permission denied); fix the "
                              "directory's permissions or use another store")
