"""Turn a store URL into an ObjectStore backend.

Accepted forms (the same everywhere a store is configured: ``--store``, ``DEPTH_STORE_URL``):

- ``s3://bucket`` or ``s3://bucket/prefix/parts`` -> :class:`depth_store.s3.S3Store`
  (endpoint from ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, credentials from the AWS chain);
- ``file:///abs/path`` -> :class:`depth_store.local.LocalStore`;
- a plain path (``/abs/path``, ``./rel``, ``~/x``) -> :class:`depth_store.local.LocalStore`,
  relative paths resolved against the current directory.

Anything else (``http://...``, ``gs://...``, ``file://host/...``) is refused with a clear message.

``DEPTH_STORE_REQUEST_COUNTS=/dir`` (benchmarks): every store a process opens is wrapped in one
request-counting wrapper per process (``depth_store.counting``), whose counts are written to
``/dir/<pid>.json`` when the process exits (also a multiprocessing step process), so a workload spread over
processes (``depth-pipeline run``: the run and its step processes) is counted whole.
"""

from __future__ import annotations

import atexit
import json
import multiprocessing.util
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from depth_store.base import InvalidKeyError, ObjectStore, StoreError, validate_key
from depth_store.log import quiet_aws_loggers

if TYPE_CHECKING:
    from depth_store.counting import CountingStore
    from depth_store.s3 import S3Config

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> (``bucket``, ``a/b``); bucket and prefix validated."""
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.rstrip("/")
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise StoreError(f"invalid S3 bucket name {bucket!r} in store URL {url!r}")
    if prefix:
        try:
            validate_key(prefix)
        except InvalidKeyError as exc:
            raise StoreError(f"invalid prefix in store URL {url!r}: {exc}") from None
    return bucket, prefix


_COUNTS: dict[int, CountingStore] = {}  # pid -> this process's counter (DEPTH_STORE_REQUEST_COUNTS)


def _counted(store: ObjectStore) -> ObjectStore:
    """``store`` counted into this process's counter when DEPTH_STORE_REQUEST_COUNTS names a directory."""
    directory = os.environ.get("DEPTH_STORE_REQUEST_COUNTS", "").strip()
    if not directory:
        return store
    from depth_store.counting import CountingStore

    pid = os.getpid()
    shared = _COUNTS.get(pid)  # a forked child starts its own counter, not its parent's
    wrapped = CountingStore(store, counts_from=shared)
    if shared is None:
        _COUNTS[pid] = wrapped

        def write_counts() -> None:
            if os.getpid() != pid:
                return
            out = {"pid": pid, "argv": sys.argv[:3], "requests": wrapped.snapshot()}
            Path(directory).mkdir(parents=True, exist_ok=True)
            (Path(directory) / f"{pid}.json").write_text(json.dumps(out))

        # multiprocessing children leave through os._exit (no atexit) but run these finalizers first
        multiprocessing.util.Finalize(None, write_counts, exitpriority=100)
        atexit.register(write_counts)
    return wrapped


def open_store(url: str, *, s3_config: S3Config | None = None) -> ObjectStore:
    """``s3://bucket/prefix`` -> S3 (``AWS_ENDPOINT_URL`` honoured); ``file:///abs`` or a path -> local.

    ``s3_config`` overrides the S3 timeouts/retries/SSE otherwise read from ``DEPTH_S3_*`` variables.
    """
    return _counted(_open_store(url, s3_config=s3_config))


def _open_store(url: str, *, s3_config: S3Config | None = None) -> ObjectStore:
    if not isinstance(url, str) or not url.strip():
        raise StoreError("store URL is empty: give s3://bucket/prefix, file:///abs/path or a local path")
    url = url.strip()
    match = _SCHEME_RE.match(url)
    if match is None and re.match(r"^(s3|file|https?):", url, re.IGNORECASE):
        raise StoreError(f"malformed store URL {url!r}: use s3://bucket/prefix or file:///abs/path")
    if match is None:
        from depth_store.local import LocalStore

        return LocalStore(os.path.abspath(os.path.expanduser(url)))
    scheme = match.group(1).lower()
    if scheme == "s3":
        from depth_store.s3 import S3Store

        bucket, prefix = parse_s3_url(url)
        # botocore logs the access key id at DEBUG: every process that opens an S3 store keeps the SDK quiet
        quiet_aws_loggers()
        return S3Store(bucket, prefix, config=s3_config)
    if scheme == "file":
        from depth_store.local import LocalStore

        rest = url[len(match.group(0)) :]
        host, slash, path = rest.partition("/")
        if host not in ("", "localhost") or not slash:
            raise StoreError(f"file URL must be file:///absolute/path, got {url!r}")
        return LocalStore("/" + unquote(path))
    raise StoreError(
        f"unsupported store URL scheme {scheme!r} in {url!r}: use s3://bucket/prefix, "
        "file:///abs/path or a local path"
    )
