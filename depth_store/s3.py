"""S3 backend through boto3 (any S3-compatible endpoint: ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``).

Why it looks like this:

- Short connect/read timeouts and our own bounded retry loop (jittered exponential backoff on
  throttling, 5xx and connection errors; botocore's own retries are off) so a caller learns of an
  outage within a known time as :class:`StoreUnavailableError` and can keep its data locally.
- Uploads are verified: ``Content-MD5`` on single PUTs (S3 rejects a corrupted body) plus an ETag
  check; multipart uploads compare the multipart ETag and the size. S3 makes an object visible only
  when its PUT or CompleteMultipartUpload succeeds, so an interrupted upload leaves nothing visible
  (boto3 aborts a failed multipart; a killed process leaves only an invisible incomplete upload,
  see :meth:`S3Store.abort_incomplete_uploads` and the lifecycle rule in docs/object-store.md).
- Credentials come only from the standard AWS chain and are never logged.
"""

from __future__ import annotations

import base64
import builtins
import datetime as dt
import functools
import hashlib
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import boto3
import botocore.exceptions as bce
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from depth_store.base import (
    DeleteResult,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    StoreError,
    StoreUnavailableError,
    _write_file_atomically,
    validate_key,
)

log = logging.getLogger("depth_store")

T = TypeVar("T")

_THROTTLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "BadDigest",  # body corrupted in transit: sending it again is the fix
        "IncompleteBody",
        "ConditionalRequestConflict",  # 409: a racing conditional write; AWS says retry
    }
)
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "412"})
_AWS_ENDPOINT_RE = re.compile(r"^https://[A-Za-z0-9.-]*\.amazonaws\.com(\.cn)?(:443)?/?$")
_MD5_METADATA = "content-md5"  # x-amz-meta-content-md5: the content MD5, whatever the ETag is
_MD5_HEX_RE = re.compile(r"^[0-9a-f]{32}$")
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_SSE_MODES = ("AES256", "aws:kms")
DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys a request


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise StoreError(f"{name}={raw!r} is not a number") from None


@dataclass(frozen=True)
class S3Config:
    """Timeouts, retry budget, multipart sizes and server-side encryption of an :class:`S3Store`."""

    connect_timeout: float = 3.0
    read_timeout: float = 20.0
    max_attempts: int = 10  # per operation, first try included
    retry_deadline: float = 60.0  # seconds per operation, across attempts
    backoff_base: float = 0.2
    backoff_cap: float = 10.0
    multipart_threshold: int = 64 * 1024 * 1024
    multipart_chunksize: int = 16 * 1024 * 1024
    max_concurrency: int = 4
    sse: str | None = None  # "AES256" or "aws:kms"
    sse_kms_key_id: str | None = None
    max_pool_connections: int = 20

    def __post_init__(self) -> None:
        if self.sse is not None and self.sse not in _SSE_MODES:
            raise StoreError(f"server-side encryption must be one of {_SSE_MODES}, got {self.sse!r}")
        if self.sse_kms_key_id and self.sse != "aws:kms":
            raise StoreError("DEPTH_S3_SSE_KMS_KEY_ID needs DEPTH_S3_SSE=aws:kms")
        if self.max_attempts < 1 or self.retry_deadline <= 0:
            raise StoreError("S3 retry budget must allow at least one attempt")
        if self.multipart_chunksize < 5 * 1024 * 1024:
            raise StoreError("S3 multipart chunk size must be at least 5 MiB")

    @classmethod
    def from_env(cls, **overrides: Any) -> S3Config:
        """Defaults, then ``DEPTH_S3_*`` variables, then explicit ``overrides``."""
        d = cls()
        values: dict[str, Any] = {
            "connect_timeout": _env_float("DEPTH_S3_CONNECT_TIMEOUT", d.connect_timeout),
            "read_timeout": _env_float("DEPTH_S3_READ_TIMEOUT", d.read_timeout),
            "max_attempts": int(_env_float("DEPTH_S3_MAX_ATTEMPTS", d.max_attempts)),
            "retry_deadline": _env_float("DEPTH_S3_RETRY_DEADLINE", d.retry_deadline),
            "multipart_threshold": int(_env_float("DEPTH_S3_MULTIPART_THRESHOLD", d.multipart_threshold)),
            "multipart_chunksize": int(_env_float("DEPTH_S3_MULTIPART_CHUNKSIZE", d.multipart_chunksize)),
            "max_concurrency": int(_env_float("DEPTH_S3_MAX_CONCURRENCY", d.max_concurrency)),
            "sse": os.environ.get("DEPTH_S3_SSE") or None,
            "sse_kms_key_id": os.environ.get("DEPTH_S3_SSE_KMS_KEY_ID") or None,
        }
        values.update(overrides)
        return cls(**values)


def _client_error_code(exc: bce.ClientError) -> tuple[str, int]:
    err = exc.response.get("Error", {}) or {}
    meta = exc.response.get("ResponseMetadata", {}) or {}
    return str(err.get("Code", "")), int(meta.get("HTTPStatusCode", 0) or 0)


def _unwrap(exc: Exception) -> Exception:
    """boto3's upload_file hides the ClientError inside S3UploadFailedError: look at the real one."""
    if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, Exception):
        return exc.__context__
    return exc


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, bce.ClientError):
        code, status = _client_error_code(exc)
        return (
            code in _THROTTLE_CODES
            or "Throttl" in code  # also KMS.ThrottlingException and friends behind SSE-KMS
            or status == 429
            or status >= 500
            or code in {"429", "500", "502", "503", "504"}
        )
    return isinstance(
        exc,
        bce.ConnectionError  # EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError
        | bce.HTTPClientError  # ReadTimeoutError, ConnectionClosedError, ResponseStreamingError
        | bce.IncompleteReadError
        | ConnectionError  # resets surfacing as plain OSErrors from the socket layer
        | TimeoutError,
    )


def _md5_etag_of_parts(path: Path, chunksize: int) -> tuple[str, str, int]:
    """The ETag S3 gives a multipart upload of ``path`` in ``chunksize`` parts, its MD5 and size."""
    digests: list[bytes] = []
    whole = hashlib.md5(usedforsecurity=False)
    size = 0
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(chunksize), b""):
            digests.append(hashlib.md5(chunk, usedforsecurity=False).digest())
            whole.update(chunk)
            size += len(chunk)
    if len(digests) <= 1:
        return whole.hexdigest(), whole.hexdigest(), size
    combined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
    return f"{combined}-{len(digests)}", whole.hexdigest(), size


class S3Store(ObjectStore):
    """Objects under ``s3://bucket/prefix/``; keys are relative to the prefix."""

    def __init__(self, bucket: str, prefix: str = "", *, config: S3Config | None = None) -> None:
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        self.bucket = bucket
        self.prefix = prefix
        self.config = config if config is not None else S3Config.from_env()
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self._session = boto3.session.Session()
        self._region = self._session.region_name or "us-east-1"
        botocore_config = Config(
            connect_timeout=self.config.connect_timeout,
            read_timeout=self.config.read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},  # our loop retries, bounded
            max_pool_connections=self.config.max_pool_connections,
            region_name=self._region,
        )
        self._client = self._session.client("s3", config=botocore_config)
        self._bucket_checked = False
        self._transfer_config = TransferConfig(
            multipart_threshold=self.config.multipart_threshold,
            multipart_chunksize=self.config.multipart_chunksize,
            max_concurrency=self.config.max_concurrency,
            use_threads=self.config.max_concurrency > 1,
        )

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen_s3, (self.bucket, self.prefix, self.config))

    @property
    def endpoint_url(self) -> str:
        return str(self._client.meta.endpoint_url)

    # -- helpers ---------------------------------------------------------------------------------

    def _full_key(self, key: str, *, allow_prefix: bool = False) -> str:
        validate_key(key, allow_prefix=allow_prefix)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel_key(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1 :] if self.prefix else full_key

    def _sse_args(self) -> dict[str, str]:
        args: dict[str, str] = {}
        if self.config.sse:
            args["ServerSideEncryption"] = self.config.sse
            if self.config.sse_kms_key_id:
                args["SSEKMSKeyId"] = self.config.sse_kms_key_id
        return args

    def _call(self, what: str, key: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` with bounded, jittered exponential backoff on transient failures."""
        cfg = self.config
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except Exception as raised:
                exc = _unwrap(raised)
                self._raise_if_permanent(what, key, exc)
                elapsed = time.monotonic() - started
                delay = random.uniform(0, min(cfg.backoff_cap, cfg.backoff_base * 2 ** (attempt - 1)))
                if attempt >= cfg.max_attempts or elapsed + delay >= cfg.retry_deadline:
                    log.error(
                        "S3 %s %s gave up after %d attempts in %.1fs (%s)",
                        what,
                        key,
                        attempt,
                        elapsed,
                        type(exc).__name__,
                    )
                    raise StoreUnavailableError(
                        f"S3 {what} of {key!r} in bucket {self.bucket!r} failed after {attempt} attempts "
                        f"in {elapsed:.1f}s: {type(exc).__name__}: {exc}"
                    ) from exc
                log.warning(
                    "S3 %s %s attempt %d/%d failed (%s: %s); retrying in %.2fs",
                    what,
                    key,
                    attempt,
                    cfg.max_attempts,
                    type(exc).__name__,
                    _short(exc),
                    delay,
                )
                time.sleep(delay)

    def _raise_if_permanent(self, what: str, key: str, exc: Exception) -> None:
        if _is_retryable(exc):
            return
        if isinstance(exc, bce.ClientError):
            code, status = _client_error_code(exc)
            if code == "NoSuchBucket":
                raise StoreError(
                    f"S3 bucket {self.bucket!r} does not exist (endpoint {self.endpoint_url})"
                ) from exc
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise StoreError(
                    f"S3 {what} of {key!r} in bucket {self.bucket!r} denied ({code}): check the "
                    "credentials and the IAM policy for this prefix"
                ) from exc
            raise StoreError(
                f"S3 {what} of {key!r} in bucket {self.bucket!r} failed: {code} (HTTP {status})"
            ) from exc
        if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
            raise StoreError(
                "no AWS credentials found in the standard chain (environment, config files, "
                "instance/container role)"
            ) from exc
        if isinstance(exc, StoreError):
            raise exc
        raise StoreError(f"S3 {what} of {key!r} failed: {type(exc).__name__}: {exc}") from exc

    def _check_bucket_after_404(self) -> None:
        """A 404 on HEAD does not say whether the key or the bucket is missing: ask once."""
        if self._bucket_checked:
            return
        try:
            self._call("head-bucket", "", lambda: self._client.head_bucket(Bucket=self.bucket))
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, bce.ClientError) and _client_error_code(cause)[0] in ("404", "NoSuchBucket"):
                raise StoreError(
                    f"S3 bucket {self.bucket!r} does not exist (endpoint {self.endpoint_url})"
                ) from None
            raise
        self._bucket_checked = True

    # -- writes ----------------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes | memoryview) -> ObjectInfo:
        info = self._put_object(key, data if isinstance(data, bytes) else data.tobytes(), {})
        assert info is not None  # unconditional: never refused
        return info

    def put_bytes_if_absent(self, key: str, data: bytes) -> ObjectInfo | None:
        return self._put_object(key, data, {"IfNoneMatch": "*"})

    def put_bytes_if_match(self, key: str, data: bytes, etag: str) -> ObjectInfo | None:
        return self._put_object(key, data, {"IfMatch": _quoted(etag)})

    def copy(self, src_key: str, dst_key: str) -> ObjectInfo:
        """Server-side ``CopyObject`` (one request, no bytes through us; objects up to 5 GiB).

        The metadata (the content MD5) is copied with the object; the new ETag is S3's, from the response.
        """
        src = self._full_key(src_key)
        dst = self._full_key(dst_key)

        def copy() -> dict[str, Any]:
            return self._client.copy_object(
                Bucket=self.bucket,
                Key=dst,
                CopySource={"Bucket": self.bucket, "Key": src},
                MetadataDirective="COPY",
                **self._sse_args(),
            )

        try:
            resp = self._call("copy", dst, copy)
        except StoreError as exc:
            if _cause_code(exc) in _NOT_FOUND_CODES:
                raise ObjectNotFoundError(src_key) from None
            raise
        result = resp.get("CopyObjectResult") or {}
        info = self._head_full(dst)  # size and the stored content md5 (the copy response lacks them)
        if info is None:
            raise StoreError(f"S3 copy of {src!r} to {dst!r}: the copy is not visible after success")
        etag = str(result.get("ETag", "")).strip('"')
        return replace(info, key=dst_key, etag=etag or info.etag)

    def delete_if_match(self, key: str, etag: str) -> bool:
        full = self._full_key(key)
        try:
            self._call(
                "conditional-delete",
                full,
                lambda: self._client.delete_object(Bucket=self.bucket, Key=full, IfMatch=_quoted(etag)),
            )
        except StoreError as exc:
            code = _cause_code(exc)
            if code in _PRECONDITION_CODES or code in _NOT_FOUND_CODES:
                return False
            if code == "NotImplemented":
                raise self._conditional_unsupported(full, exc) from exc
            raise
        return True

    def _conditional_unsupported(self, full: str, exc: StoreError) -> StoreError:
        return StoreError(
            f"S3 endpoint {self.endpoint_url} does not implement conditional requests "
            f"(If-Match / If-None-Match) needed for {full!r}: the one-writer and publish guarantees "
            "need them (AWS S3 since 2024, MinIO, moto >= 5.0 have them)"
        )

    def put_sealed_file(self, key: str, path: Path, md5: str) -> ObjectInfo:
        """Below the multipart threshold: one PutObject whose ``Content-MD5`` is the caller's MD5 (computed
        while the file was written), so S3 checks the bytes it received against the bytes as written, and
        nothing here hashes them again. Larger files: :meth:`put_file`."""
        path = Path(path)
        if path.stat().st_size >= self.config.multipart_threshold:
            return self.put_file(key, path)
        info = self._put_object(key, path.read_bytes(), {}, md5_hex=md5)
        assert info is not None  # unconditional: never refused
        return info

    def _put_object(
        self, key: str, data: bytes, conditions: dict[str, str], md5_hex: str | None = None
    ) -> ObjectInfo | None:
        """One PutObject; ``conditions`` (If-None-Match / If-Match) make it refusable: None then.
        ``md5_hex``: the data's MD5 when the caller knows it (S3 verifies it as ``Content-MD5``).

        A conditional put whose first attempt may have landed (a retried timeout) and that is then
        refused counts as written when the object holds exactly these bytes: conditional puts are
        idempotent for identical content.
        """
        full = self._full_key(key)
        if md5_hex is None:
            md5_hex = hashlib.md5(data, usedforsecurity=False).hexdigest()
        content_md5 = base64.b64encode(bytes.fromhex(md5_hex)).decode()
        extra = self._sse_args()
        attempts = 0

        def put() -> dict[str, Any]:
            nonlocal attempts
            attempts += 1
            return self._client.put_object(
                Bucket=self.bucket,
                Key=full,
                Body=data,
                ContentMD5=content_md5,
                Metadata={_MD5_METADATA: md5_hex},
                **conditions,
                **extra,
            )

        try:
            resp = self._call("conditional-put" if conditions else "put", full, put)
        except StoreError as exc:
            code = _cause_code(exc)
            refused = code in _PRECONDITION_CODES or ("IfMatch" in conditions and code in _NOT_FOUND_CODES)
            if not conditions or not refused:
                if conditions and code == "NotImplemented":
                    raise self._conditional_unsupported(full, exc) from exc
                raise
            if attempts > 1:
                landed = self._head_full(full)
                if landed is not None and landed.content_md5 == md5_hex:
                    log.info("S3 conditional put %s: an earlier attempt landed these bytes", full)
                    return replace(landed, key=key)
            return None
        etag = str(resp.get("ETag", "")).strip('"')
        if self.config.sse != "aws:kms" and etag and etag != md5_hex:
            # S3 verified Content-MD5 already; a differing ETag means something rewrote the body.
            raise StoreError(f"S3 put of {full!r}: ETag {etag} differs from the content md5 {md5_hex}")
        self._bucket_checked = True
        return ObjectInfo(
            key=key,
            size=len(data),
            etag=etag or md5_hex,
            last_modified=dt.datetime.now(dt.UTC),
            content_md5=md5_hex,
        )

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        path = Path(path)
        size = path.stat().st_size
        if size < self.config.multipart_threshold:
            return self.put_bytes(key, path.read_bytes())
        full = self._full_key(key)
        expected_etag, content_md5, expected_size = _md5_etag_of_parts(path, self.config.multipart_chunksize)
        extra: dict[str, Any] = {**self._sse_args(), "Metadata": {_MD5_METADATA: content_md5}}

        def upload() -> None:
            # s3transfer aborts the multipart upload when a part fails: nothing partial is visible.
            self._client.upload_file(
                str(path), self.bucket, full, ExtraArgs=extra, Config=self._transfer_config
            )

        self._call("multipart-put", full, upload)
        info = self._head_full(full)
        if info is None or info.size != expected_size:
            raise StoreError(
                f"S3 upload of {full!r}: size after upload {info.size if info else None} != {expected_size}"
            )
        if self.config.sse != "aws:kms" and info.etag and info.etag != expected_etag:
            raise StoreError(f"S3 upload of {full!r}: ETag {info.etag} != expected {expected_etag}")
        if info.content_md5 is not None and info.content_md5 != content_md5:
            raise StoreError(f"S3 upload of {full!r}: stored md5 {info.content_md5} != local {content_md5}")
        self._bucket_checked = True
        return replace(info, key=key)

    # -- reads -----------------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        full = self._full_key(key)

        def get() -> bytes:
            resp = self._client.get_object(Bucket=self.bucket, Key=full)
            body: bytes = resp["Body"].read()
            return body

        try:
            return self._call("get", full, get)
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, bce.ClientError) and _client_error_code(cause)[0] in _NOT_FOUND_CODES:
                raise ObjectNotFoundError(key) from None
            raise

    def get_file(self, key: str, dest: Path) -> int:
        """Streamed (multipart-ranged for large objects) download; ``dest`` replaced atomically."""
        full = self._full_key(key)
        dest = Path(dest)

        def download() -> None:
            _write_file_atomically(
                dest,
                lambda fh: self._client.download_fileobj(self.bucket, full, fh, Config=self._transfer_config),
            )

        try:
            self._call("get", full, download)
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, bce.ClientError) and _client_error_code(cause)[0] in _NOT_FOUND_CODES:
                self._check_bucket_after_404()
                raise ObjectNotFoundError(key) from None
            raise
        return dest.stat().st_size

    def head(self, key: str) -> ObjectInfo | None:
        info = self._head_full(self._full_key(key))
        return None if info is None else replace(info, key=key)

    def _head_full(self, full: str) -> ObjectInfo | None:
        try:
            resp = self._call("head", full, lambda: self._client.head_object(Bucket=self.bucket, Key=full))
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, bce.ClientError) and _client_error_code(cause)[0] in _NOT_FOUND_CODES:
                self._check_bucket_after_404()
                return None
            raise
        stored_md5 = (resp.get("Metadata") or {}).get(_MD5_METADATA)
        return ObjectInfo(
            key=full,
            size=int(resp["ContentLength"]),
            etag=str(resp.get("ETag", "")).strip('"') or None,
            last_modified=resp["LastModified"].astimezone(dt.UTC),
            content_md5=stored_md5
            if isinstance(stored_md5, str) and _MD5_HEX_RE.fullmatch(stored_md5)
            else None,
        )

    def head_raw(self, key: str) -> dict[str, Any] | None:
        """The full HeadObject response (e.g. ``ServerSideEncryption``), or None if absent."""
        full = self._full_key(key)
        try:
            resp: dict[str, Any] = self._call(
                "head", full, lambda: self._client.head_object(Bucket=self.bucket, Key=full)
            )
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, bce.ClientError) and _client_error_code(cause)[0] in _NOT_FOUND_CODES:
                return None
            raise
        return resp

    def list_folders(self, prefix: str) -> builtins.list[str]:
        """``list_objects_v2`` with ``Delimiter='/'``: one request per 1,000 folders, whatever they hold."""
        validate_key(prefix, allow_prefix=True)
        full_prefix = (f"{self.prefix}/" if self.prefix else "") + prefix
        token: str | None = None
        out: builtins.list[str] = []
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full_prefix, "Delimiter": "/"}
            if token:
                kwargs["ContinuationToken"] = token
            page: dict[str, Any] = self._call(
                "list", full_prefix, functools.partial(self._client.list_objects_v2, **kwargs)
            )
            self._bucket_checked = True
            out.extend(self._rel_key(str(p["Prefix"])) for p in page.get("CommonPrefixes", []) or [])
            if not page.get("IsTruncated"):
                return sorted(out)
            token = page.get("NextContinuationToken")

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Pages of ``list_objects_v2`` (1,000 keys each), each page retried on its own.

        ``start_after`` becomes ``StartAfter``: S3 returns only keys after it, so the pages cost scales
        with the new keys, not with everything under the prefix.
        """
        validate_key(prefix, allow_prefix=True)
        full_prefix = (f"{self.prefix}/" if self.prefix else "") + prefix
        token: str | None = None
        base_kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full_prefix}
        if start_after is not None:
            validate_key(start_after, allow_prefix=True)
            base_kwargs["StartAfter"] = (f"{self.prefix}/" if self.prefix else "") + start_after
        while True:
            kwargs: dict[str, Any] = dict(base_kwargs)
            if token:
                kwargs["ContinuationToken"] = token
            page: dict[str, Any] = self._call(
                "list", full_prefix, functools.partial(self._client.list_objects_v2, **kwargs)
            )
            self._bucket_checked = True
            for item in page.get("Contents", []) or []:
                full = str(item["Key"])
                if full.endswith("/"):
                    continue  # "folder" placeholder objects made by consoles
                yield ObjectInfo(
                    key=self._rel_key(full),
                    size=int(item["Size"]),
                    etag=str(item.get("ETag", "")).strip('"') or None,
                    last_modified=item["LastModified"].astimezone(dt.UTC),
                )
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
            if not token:
                return

    def delete(self, key: str) -> None:
        full = self._full_key(key)
        self._call("delete", full, lambda: self._client.delete_object(Bucket=self.bucket, Key=full))

    def delete_many(self, keys: Iterable[str]) -> DeleteResult:
        """``DeleteObjects`` in batches of 1,000 (quiet mode: S3 answers with the failures only).

        Each batch is retried as a whole on transient failures (deleting twice is harmless); a key S3
        refuses (``AccessDenied``, ...) is reported in ``errors`` and the rest go on.
        """
        result = DeleteResult()
        batch: builtins.list[str] = []
        for key in keys:
            batch.append(key)
            if len(batch) == DELETE_BATCH:
                self._delete_batch(batch, result)
                batch = []
        if batch:
            self._delete_batch(batch, result)
        return result

    def _delete_batch(self, keys: Sequence[str], result: DeleteResult) -> None:
        full_of = {self._full_key(k): k for k in keys}
        request = {"Objects": [{"Key": full} for full in full_of], "Quiet": True}
        resp: dict[str, Any] = self._call(
            "delete-objects",
            f"{len(keys)} keys from {keys[0]}",
            functools.partial(self._client.delete_objects, Bucket=self.bucket, Delete=request),
        )
        result.requests += 1
        failed: dict[str, str] = {}
        for err in resp.get("Errors", []) or []:
            full = str(err.get("Key", ""))
            failed[full_of.get(full, full)] = f"{err.get('Code', '?')}: {err.get('Message', '')}".strip()
        for key in keys:
            if key in failed:
                result.errors[key] = failed[key]
            else:
                result.deleted.append(key)
        if failed:
            log.error(
                "S3 DeleteObjects refused %d of %d keys, e.g. %s",
                len(failed),
                len(keys),
                next(iter(failed.items())),
            )

    def scan_location(self, key: str) -> tuple[str, dict[str, str] | None]:
        """``s3://bucket/prefix/key`` and polars/object_store ``storage_options``.

        The options carry the session's current credentials: pass them to the reader, never log them.
        """
        full = self._full_key(key, allow_prefix=True) if key else (self.prefix + "/" if self.prefix else "")
        options: dict[str, str] = {"aws_region": self._region}
        endpoint = self.endpoint_url
        if not _AWS_ENDPOINT_RE.match(endpoint):
            # A custom endpoint (the one this store's client was made with, even if the
            # environment has changed since): the reader must go to the same place.
            options["aws_endpoint_url"] = endpoint
            if endpoint.startswith("http://"):
                options["aws_allow_http"] = "true"
        creds = self._session.get_credentials()
        if creds is not None:
            frozen = creds.get_frozen_credentials()
            options["aws_access_key_id"] = frozen.access_key
            options["aws_secret_access_key"] = frozen.secret_key
            if frozen.token:
                options["aws_session_token"] = frozen.token
        return f"s3://{self.bucket}/{full}", options

    # -- housekeeping ----------------------------------------------------------------------------

    def abort_incomplete_uploads(self, older_than_seconds: float = 24 * 3600) -> int:
        """Abort multipart uploads under the prefix left by killed writers (never visible as objects)."""
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=older_than_seconds)
        prefix = f"{self.prefix}/" if self.prefix else ""
        resp = self._call(
            "list-uploads",
            prefix,
            lambda: self._client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix),
        )
        aborted = 0
        for upload in resp.get("Uploads", []) or []:
            if upload["Initiated"].astimezone(dt.UTC) <= cutoff:
                key, upload_id = upload["Key"], upload["UploadId"]
                abort = functools.partial(
                    self._client.abort_multipart_upload, Bucket=self.bucket, Key=key, UploadId=upload_id
                )
                self._call("abort-upload", key, abort)
                aborted += 1
        return aborted


def _quoted(etag: str) -> str:
    """S3 wants the ETag of If-Match in its quotes; ObjectInfo holds it bare."""
    bare = etag.strip().strip('"')
    return f'"{bare}"'


def _cause_code(exc: StoreError) -> str:
    """The S3 error code behind a StoreError raised by ``_call``, or ''."""
    cause = exc.__cause__
    if isinstance(cause, bce.ClientError):
        return _client_error_code(cause)[0]
    return ""


def _reopen_s3(bucket: str, prefix: str, config: S3Config) -> S3Store:
    return S3Store(bucket, prefix, config=config)


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
