"""A real local S3 server that checks credentials, and the AWS files a user would have for it.

moto runs in its own process (`python -m moto.server`) with authentication on, so request
signatures are verified and IAM policies enforced: an unknown access key is refused, and the
`reader` user (s3:GetObject and s3:ListBucket only) cannot write. The endpoint and the keys
reach calderalab only the way they reach any AWS tool: AWS_CONFIG_FILE (profiles with
`endpoint_url`) and AWS_SHARED_CREDENTIALS_FILE, or the AWS_* variables.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

# Every variable through which botocore could pick up credentials or an endpoint from outside the test.
AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_CONFIG_FILE",
                 "AWS_SHARED_CREDENTIALS_FILE")
BUCKET = "calderalab-e2e"
READ_ACTIONS = ["s3:GetObject", "s3:ListBucket"]


@dataclass(frozen=True)
class LocalS3:
    endpoint: str
    admin: tuple[str, str]  # (access key id, secret) allowed s3:*
    reader: tuple[str, str]  # allowed READ_ACTIONS only
    config_file: Path
    credentials_file: Path

    def env(self) -> dict[str, str]:
        """What a user's shell would hold: the two AWS files (default profile: admin; profile `reader`),
        the endpoint only in the config file, and no AWS_* keys."""
        return {"AWS_CONFIG_FILE": str(self.config_file), "AWS_SHARED_CREDENTIALS_FILE": str(self.credentials_file),
                "AWS_EC2_METADATA_DISABLED": "true"}

    def process_env(self, **extra: str) -> dict[str, str]:
        """os.environ without the AWS_* variables, plus env() and `extra`: for a subprocess."""
        base = {k: v for k, v in os.environ.items() if k not in AWS_VARIABLES}
        return {**base, **self.env(), **extra}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _set_auth_after(endpoint: str, n_requests: str) -> None:
    """Tell moto to check credentials on every request after the next `n_requests` ('inf': never)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=n_requests.encode(),
                                     headers={"Content-Type": "text/plain"})  # a form type would hide the body
    urllib.request.urlopen(request, timeout=2).close()


def _wait_until_up(endpoint: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}")
        try:
            _set_auth_after(endpoint, "inf")
            return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"moto server at {endpoint} did not answer in {timeout_s} s")


def _user(iam, name: str, actions: list[str]) -> tuple[str, str]:
    iam.create_user(UserName=name)
    statement = {"Effect": "Allow", "Action": actions, "Resource": "*"}
    iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy",
                        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def _write_aws_files(root: Path, endpoint: str, admin: tuple[str, str], reader: tuple[str, str]) -> tuple[Path, Path]:
    config, credentials = root / "config", root / "credentials"
    profile = f"region = us-east-1\nendpoint_url = {endpoint}\n"
    config.write_text(f"[default]\n{profile}\n[profile reader]\n{profile}")
    keys = lambda k: f"aws_access_key_id = {k[0]}\naws_secret_access_key = {k[1]}\n"  # noqa: E731
    credentials.write_text(f"[default]\n{keys(admin)}\n[reader]\n{keys(reader)}")
    return config, credentials


@contextlib.contextmanager
def local_s3(root: Path) -> Iterator[LocalS3]:
    """Start the server, create an admin and a reader user and BUCKET, turn authentication on; stop after."""
    import boto3

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in AWS_VARIABLES}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_up(endpoint, proc)
        setup = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "setup",
                 "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", **setup)
        admin, reader = _user(iam, "admin", ["s3:*"]), _user(iam, "reader", READ_ACTIONS)
        boto3.client("s3", **setup).create_bucket(Bucket=BUCKET)
        _set_auth_after(endpoint, "0")  # from now on, every request is checked
        yield LocalS3(endpoint, admin, reader, *_write_aws_files(root, endpoint, admin, reader))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def s3_client(server: LocalS3):
    """An admin s3fs client of the server, for tests to look at what calderalab wrote."""
    import s3fs

    return s3fs.S3FileSystem(key=server.admin[0], secret=server.admin[1], skip_instance_cache=True,
                             client_kwargs={"endpoint_url": server.endpoint, "region_name": "us-east-1"})
