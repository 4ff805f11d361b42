"""Object-store access errors as one line that names the URL and the fix; the write probe.

fsspec and s3fs report a missing bucket as FileNotFoundError, a refused request as
PermissionError, and an unreachable endpoint or absent credentials as botocore exceptions
(not OSErrors at all, so they would reach the user as a traceback). `storage_error` turns
each into an ArtifactError whose message says which store, which endpoint, and what to do.
Credentials and endpoints come from the client's own chain (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_ENDPOINT_URL[_S3], ~/.aws/config and credentials);
calderalab adds no options of its own. Imports neither botocore nor s3fs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from typing import Any, Iterator

from calderalab.errors import ArtifactError

log = logging.getLogger(__name__)

CREDENTIALS_HINT = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE naming a profile "
                    "in ~/.aws/credentials")
_REFUSED_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}


def is_object_store(fs: Any) -> bool:
    """True for a bucket-and-key store (s3, gcs, azure, ...): no directories, no rename, no local temp files."""
    from fsspec.implementations.local import LocalFileSystem

    return not isinstance(fs, LocalFileSystem)


def bucket_of(root: str) -> str:
    """The bucket (first path component) of an object-store path 'bucket/prefix/...'."""
    return root.split("/", 1)[0]


def endpoint_of(fs: Any) -> str:
    """The endpoint the store's client talks to ('the default endpoint' before it has connected)."""
    client = getattr(fs, "_s3", None)  # s3fs's connected client
    url = getattr(getattr(client, "meta", None), "endpoint_url", None)
    return url or fs.storage_options.get("endpoint_url") or "the default endpoint"


def _error_code(err: BaseException) -> str | None:
    """The service's error code ('NoSuchBucket', 'AccessDenied', '403', ...) behind an s3fs error."""
    for cause in (err, err.__cause__, err.__context__):
        response = getattr(cause, "response", None)
        if isinstance(response, dict):
            return response.get("Error", {}).get("Code")
    return None


def _is_client_library_error(err: BaseException) -> bool:
    """An exception of botocore/aiobotocore (not an OSError, so the CLI would print a traceback)."""
    return any(cls.__module__.split(".")[0] in ("botocore", "aiobotocore") for cls in type(err).__mro__)


def storage_error(err: BaseException, url: str, fs: Any, doing: str) -> ArtifactError | None:
    """The one-line ArtifactError for an object-store failure while `doing` ('read', 'write'), or None
    when `err` is not an access failure (a missing file is for the caller to explain)."""
    where = f"{url} (endpoint {endpoint_of(fs)})"
    code = _error_code(err)
    name = type(err).__name__
    if code == "NoSuchBucket":
        return ArtifactError(missing_bucket_message(url, fs, doing))
    if code in _REFUSED_CODES:
        return ArtifactError(f"cannot {doing} {where}: the credentials were refused ({code}); {CREDENTIALS_HINT}")
    if code == "403":  # a refused HEAD request has no body to say whether the keys or the policy refused it
        return ArtifactError(f"cannot {doing} {where}: access refused (403: wrong credentials, or no permission); "
                             f"check the credentials ({CREDENTIALS_HINT}) and the bucket's policy")
    if isinstance(err, PermissionError) or code == "AccessDenied":
        fix = ("use credentials allowed to write there (AWS_PROFILE / AWS_ACCESS_KEY_ID) or another store URL"
               if doing == "write" else "use credentials allowed to read it (AWS_PROFILE / AWS_ACCESS_KEY_ID)")
        return ArtifactError(f"cannot {doing} {where}: access denied ({code or err}); {fix}")
    if name == "NoCredentialsError" or name == "PartialCredentialsError":
        return ArtifactError(f"cannot {doing} {url}: no credentials found; {CREDENTIALS_HINT}")
    if "Connect" in name or "Timeout" in name:
        return ArtifactError(f"cannot {doing} {where}: the endpoint does not answer ({name}); check "
                             "AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 (or endpoint_url in ~/.aws/config)")
    if _is_client_library_error(err):
        return ArtifactError(f"cannot {doing} {where}: {name}: {err}")
    return None


def missing_bucket_message(url: str, fs: Any, doing: str) -> str:
    bucket = bucket_of(url.split("://", 1)[-1])
    fix = (f"create it (e.g. `aws s3 mb s3://{bucket}`) or pass another store URL" if doing == "write" else
           "check the URL and the endpoint (AWS_ENDPOINT_URL, or endpoint_url in ~/.aws/config)")
    return f"cannot {doing} {url}: bucket {bucket!r} does not exist at {endpoint_of(fs)}; {fix}"


@contextlib.contextmanager
def translated(url: str, fs: Any, doing: str) -> Iterator[None]:
    """Re-raise object-store access failures inside the block as one-line ArtifactErrors."""
    try:
        yield
    except ArtifactError:
        raise
    except Exception as err:  # noqa: BLE001 - filtered: anything not an access failure is re-raised as is
        if not is_object_store(fs) and not isinstance(err, PermissionError):
            raise
        mapped = storage_error(err, url, fs, doing) if is_object_store(fs) else ArtifactError(
            f"cannot {doing} {url}: permission denied ({err.strerror or err}); fix the directory's permissions "
            "or use another store")
        if mapped is None:
            raise
        raise mapped from None


def check_writable(fs: Any, root: str, url: str) -> None:
    """Write and delete a small probe object under `root`, so a missing bucket, a read-only policy or
    wrong credentials fail in a second instead of after the model load and calibration.

    The probe's name starts with the temp-file prefix, which readers never look at; a probe that
    cannot be deleted (write allowed, delete denied) is left there and logged.
    """
    from calderalab.artifacts import atomic

    probe = f"{root}/{atomic.temp_name('write-check')}"
    with translated(url, fs, "write"):  # a PUT into a missing bucket says NoSuchBucket: no listing rights needed
        if not is_object_store(fs):
            fs.makedirs(root, exist_ok=True)
        fs.pipe_file(probe, f"calderalab write check {uuid.uuid4().hex} pid {os.getpid()}\n".encode())
    try:
        fs.rm(probe)
    except Exception as err:  # noqa: BLE001 - the store is writable, which is all this checks
        log.warning("could not delete the write probe %s (%s); it is ignored by readers", probe, err)
