"""Object store interface shared by every backend.

Keys are relative to the store's configured prefix and are validated before any I/O: a key can
never address anything outside that prefix.
"""

from __future__ import annotations

import abc
import builtins
import datetime as dt
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

_KEY_SEGMENT_RE = re.compile(r"^[A-Za-z0-9=._+-]+$")


class StoreError(Exception):
    """Any failure of the object store."""


class StoreUnavailableError(StoreError):
    """The store could not be reached (after retries): the caller may keep data locally and retry."""


class ObjectNotFoundError(StoreError, KeyError):
    """The key does not exist."""


class InvalidKeyError(StoreError, ValueError):
    """A key that could escape the prefix or is not made of safe characters."""


def validate_key(key: str, *, allow_prefix: bool = False) -> str:
    """Check a relative key: ASCII segments of ``[A-Za-z0-9=._+-]``, no ``.``/``..``, no empty segment.

    ``allow_prefix`` admits a trailing ``/`` (or the empty string) for listing.
    """
    if not isinstance(key, str):
        raise InvalidKeyError(f"key must be a string, not {type(key).__name__}")
    if allow_prefix:
        if key == "":
            return key
        body = key[:-1] if key.endswith("/") else key
    else:
        body = key
    if not body or len(key) > 1024:
        raise InvalidKeyError(f"invalid key {key!r}: empty or too long")
    for seg in body.split("/"):
        if seg in ("", ".", "..") or not _KEY_SEGMENT_RE.fullmatch(seg):
            raise InvalidKeyError(f"invalid key {key!r}: bad segment {seg!r}")
    return key


@dataclass(frozen=True)
class ObjectInfo:
    """Metadata of one object.

    ``etag`` is the same from ``put_*``, ``head`` and ``list`` for one object version (compare it to
    detect a changed object; never parse it). It is the content MD5 hex except for S3 multipart
    (``md5-N``) and SSE-KMS objects, and local objects written from memory (``put_bytes*``), whose etag
    is a tag unique to the write. ``content_md5`` is the MD5 hex of the content where known (locally for
    uploaded files, ``put_file`` and ``put_sealed_file``; on S3 from ``put_*``, and from ``head`` for
    objects this layer wrote; ``None`` in S3 listings): use it to confirm an upload byte for byte. It is
    left out of ``==``.
    """

    key: str  # relative to the store prefix
    size: int
    etag: str | None  # S3 ETag / local MD5 hex or write tag; identifies this immutable version
    last_modified: dt.datetime  # UTC
    content_md5: str | None = field(default=None, compare=False)


@dataclass
class DeleteResult:
    """What :meth:`ObjectStore.delete_many` did: keys deleted (or already absent) and per-key errors."""

    deleted: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # key -> reason (S3 error code and message)
    requests: int = 0  # delete requests sent (S3: one per 1,000 keys)

    @property
    def ok(self) -> bool:
        return not self.errors


class ObjectStore(abc.ABC):
    """Put, get, head, list and delete immutable objects under one prefix. Writes are atomic."""

    url: str

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes | memoryview) -> ObjectInfo:
        """Write atomically (readers never see a partial object); verifies the checksum on upload.

        ``data`` may be a ``memoryview`` of a buffer (a Parquet file written into memory): no copy to
        ``bytes`` is needed first."""

    @abc.abstractmethod
    def put_file(self, key: str, path: Path) -> ObjectInfo:
        """Upload a local file atomically (multipart for large files on S3)."""

    def put_sealed_file(self, key: str, path: Path, md5: str) -> ObjectInfo:
        """Store a finished local file that nothing writes to again (the collector's sealed raw objects),
        whose MD5 hex the caller computed while writing it.

        The local store hard-links it into place where it can (same file system): no copy and no second
        hash, and the caller may then delete its own name. Everywhere else, and as this default, it is
        :meth:`put_file` (which hashes what it sends)."""
        return self.put_file(key, path)

    def put_bytes_if_absent(self, key: str, data: bytes) -> ObjectInfo | None:
        """Create ``key`` only if no object has that key; None (nothing written) if one exists.

        Atomic against every other writer of the same store (S3 ``If-None-Match: *``; locally a
        hard link, which fails if the name exists). Use it to claim a name (a lease, a version).
        """
        raise StoreError(f"{type(self).__name__} does not support conditional writes")

    def put_bytes_if_match(self, key: str, data: bytes, etag: str) -> ObjectInfo | None:
        """Compare-and-swap: replace ``key`` only if its current etag is ``etag``; else None.

        None also when the key is absent. Atomic against other conditional writers (S3
        ``If-Match``; locally a per-key lock around compare and rename). The returned etag is the
        new version's, from the write itself: keep it for the next compare-and-swap.
        """
        raise StoreError(f"{type(self).__name__} does not support conditional writes")

    def copy(self, src_key: str, dst_key: str) -> ObjectInfo:
        """Copy an object inside the store (server-side where the backend can); ``dst_key`` is
        replaced atomically. Raises ObjectNotFoundError if ``src_key`` is absent.

        This default reads and writes the bytes; backends override it (S3 ``CopyObject``, a local hard link).
        """
        return self.put_bytes(dst_key, self.get_bytes(src_key))

    def delete_if_match(self, key: str, etag: str) -> bool:
        """Delete ``key`` only if its current etag is ``etag`` (release a lease you still hold).

        False (nothing deleted) if the key is absent or holds another version.
        """
        raise StoreError(f"{type(self).__name__} does not support conditional deletes")

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Raises ObjectNotFoundError if absent."""

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Metadata of the object, or None if absent."""

    @abc.abstractmethod
    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order, across all pages.

        ``start_after`` (a key relative to the store, like ``prefix``) lists only keys sorting strictly
        after it: on S3 the server skips the rest (``ListObjectsV2`` ``StartAfter``), so a cursor over an
        ever-growing prefix costs requests for the new keys only.
        """

    def list_folders(self, prefix: str) -> builtins.list[str]:
        """The "folders" one level below ``prefix`` (which ends with ``/``): each ``prefix + name + '/'``
        that some key starts with, sorted. Backends answer it without listing every key under them (S3
        ``Delimiter``); this fallback lists everything and is only for wrappers that do not override it."""
        validate_key(prefix, allow_prefix=True)
        found = {
            prefix + info.key[len(prefix) :].split("/", 1)[0] + "/"
            for info in self.list(prefix)
            if "/" in info.key[len(prefix) :]
        }
        return sorted(found)

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete; deleting an absent key is not an error (idempotent)."""

    @abc.abstractmethod
    def delete_many(self, keys: Iterable[str]) -> DeleteResult:
        """Delete many keys in as few requests as the backend allows (S3: ``DeleteObjects``, 1,000 a request).

        Absent keys count as deleted (idempotent). A key that could not be deleted is reported in
        :attr:`DeleteResult.errors` with the reason; the others are still deleted. Raises only when the
        store cannot be reached at all (then some batches may already be done: deleting again is safe).
        """

    @abc.abstractmethod
    def scan_location(self, key: str) -> tuple[str, dict[str, str] | None]:
        """A URI polars/pyarrow/DuckDB can read for ``key`` (a file or a prefix) and storage options."""

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def get_file(self, key: str, dest: Path) -> int:
        """Download ``key`` to ``dest`` (replaced atomically); returns its size.

        Backends override this to stream large objects instead of holding them in memory.
        """
        data = self.get_bytes(key)
        _write_file_atomically(Path(dest), lambda fh: fh.write(data))
        return len(data)


def _write_file_atomically(dest: Path, write: Callable[[BinaryIO], object]) -> None:
    """Temp file beside ``dest``, fsync, rename: ``dest`` is never seen half-written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
    try:
        with tmp.open("wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
