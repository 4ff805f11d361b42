"""Fixtures for artifact tests: a real local S3 server (moto)."""

from __future__ import annotations

import os

import pytest

@pytest.fixture(scope="session")
def s3_server():
    """A real S3 HTTP server on a free localhost port (moto), not a mock object."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_options(s3_server, monkeypatch):
    """fsspec storage options for the local server, with a fresh bucket per test."""
    import uuid

    import s3fs

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_server}}
    bucket = f"art-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem(**options).mkdir(bucket)
    return bucket, options
