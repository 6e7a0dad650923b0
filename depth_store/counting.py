"""A request-counting wrapper around any ObjectStore: what a workload costs, counted, not estimated.

Wrap the store a component uses (``CountingStore(open_store(url))``), run the workload, then read
``snapshot()`` (or ``snapshot_and_reset()`` per interval). Counts are by request kind as S3 bills them:

- ``PUT``: ``put_bytes`` / ``put_file`` / ``put_sealed_file`` / ``put_bytes_if_*`` / ``copy`` (one
  PUT-tier request each; a multipart upload of a large file is counted as one here, S3 bills its parts
  and the completion separately);
- ``GET``: ``get_bytes`` / ``get_file``;
- ``HEAD``: ``head`` / ``exists``;
- ``LIST``: pages of a listing: one per 1,000 keys yielded, at least one per ``list`` call (S3's
  ``ListObjectsV2`` page size; a listing abandoned part-way counts the pages it read);
- ``DELETE``: ``delete`` / ``delete_if_match`` calls (one key each); a backend's batched delete, where it
  exists, counts one ``DELETE_BATCH`` request per 1,000 keys and its keys under ``DELETE``.

Any other public method of the wrapped store (a backend extra) is passed through and counted under
its own name, so nothing is invisible. A request that fails still counts: S3 bills it too.
Thread-safe: the collector's upload threads and the pipeline's pools share one counter.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from depth_store.base import DeleteResult, ObjectInfo, ObjectStore

LIST_PAGE_SIZE = 1000
REQUEST_KINDS = ("PUT", "GET", "HEAD", "LIST", "DELETE")


def _file_size(path: Path) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


class CountingStore(ObjectStore):
    """Forward every call to ``inner`` and count it by request kind (see the module docstring)."""

    def __init__(self, inner: ObjectStore, *, counts_from: CountingStore | None = None) -> None:
        """``counts_from``: add to that wrapper's counts (a store re-opened after failures keeps counting)."""
        self.inner = inner
        self.url = inner.url
        if counts_from is None:
            self._lock = threading.Lock()
            self._counts: Counter[str] = Counter()
            self._bytes: Counter[str] = Counter()
        else:
            self._lock, self._counts, self._bytes = counts_from._lock, counts_from._counts, counts_from._bytes

    def __repr__(self) -> str:
        return f"CountingStore({self.inner!r})"

    def _add(self, kind: str, n: int = 1, nbytes: int = 0) -> None:
        with self._lock:
            self._counts[kind] += n
            if nbytes:
                self._bytes[kind] += nbytes

    def snapshot(self) -> dict[str, int]:
        """Requests by kind so far (every kind of ``REQUEST_KINDS`` present, zero if none)."""
        with self._lock:
            out = dict.fromkeys(REQUEST_KINDS, 0)
            out.update(self._counts)
            return out

    def bytes_snapshot(self) -> dict[str, int]:
        """Payload bytes moved by kind (``PUT`` uploaded, ``GET`` downloaded)."""
        with self._lock:
            return dict(self._bytes)

    def snapshot_and_reset(self) -> dict[str, int]:
        """The counts so far, then zero them (atomically: no request is lost between the two)."""
        with self._lock:
            out = dict.fromkeys(REQUEST_KINDS, 0)
            out.update(self._counts)
            self._counts.clear()
            self._bytes.clear()
            return out

    def reset(self) -> None:
        self.snapshot_and_reset()

    # --- the ObjectStore interface -------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes | memoryview) -> ObjectInfo:
        self._add("PUT", nbytes=len(data))
        return self.inner.put_bytes(key, data)

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        self._add("PUT", nbytes=_file_size(path))
        return self.inner.put_file(key, path)

    def put_sealed_file(self, key: str, path: Path, md5: str) -> ObjectInfo:
        self._add("PUT", nbytes=_file_size(path))
        return self.inner.put_sealed_file(key, path, md5)

    def get_bytes(self, key: str) -> bytes:
        self._add("GET")
        data = self.inner.get_bytes(key)
        self._add_bytes("GET", len(data))
        return data

    def get_file(self, key: str, dest: Path) -> int:
        self._add("GET")
        size = self.inner.get_file(key, dest)
        self._add_bytes("GET", size)
        return size

    def _add_bytes(self, kind: str, nbytes: int) -> None:
        with self._lock:
            self._bytes[kind] += nbytes

    def head(self, key: str) -> ObjectInfo | None:
        self._add("HEAD")
        return self.inner.head(key)

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def list(self, prefix: str = "", **kwargs: Any) -> Iterator[ObjectInfo]:
        """Count one page when the listing starts and one more per further 1,000 keys yielded."""
        self._add("LIST")
        for n, info in enumerate(self.inner.list(prefix, **kwargs), start=1):
            if n > LIST_PAGE_SIZE and n % LIST_PAGE_SIZE == 1:
                self._add("LIST")
            yield info

    def delete(self, key: str) -> None:
        self._add("DELETE")
        self.inner.delete(key)

    def delete_many(self, keys: Iterable[str]) -> DeleteResult:
        """One ``DELETE_BATCH`` request per 1,000 keys (S3 ``DeleteObjects``); the keys under ``DELETE``."""
        batch = list(keys)
        self._add("DELETE_BATCH", -(-len(batch) // LIST_PAGE_SIZE))
        self._add("DELETE", len(batch))
        return self.inner.delete_many(batch)

    def put_bytes_if_absent(self, key: str, data: bytes) -> ObjectInfo | None:
        self._add("PUT", nbytes=len(data))
        return self.inner.put_bytes_if_absent(key, data)

    def put_bytes_if_match(self, key: str, data: bytes, etag: str) -> ObjectInfo | None:
        self._add("PUT", nbytes=len(data))
        return self.inner.put_bytes_if_match(key, data, etag)

    def delete_if_match(self, key: str, etag: str) -> bool:
        self._add("DELETE")
        return self.inner.delete_if_match(key, etag)

    def copy(self, src_key: str, dst_key: str) -> ObjectInfo:
        self._add("PUT")  # S3 bills CopyObject as a PUT-tier request
        return self.inner.copy(src_key, dst_key)

    def scan_location(self, key: str) -> tuple[str, dict[str, str] | None]:
        # not a request: the caller's reader (polars, pyarrow) makes its own, uncounted here
        return self.inner.scan_location(key)

    def __getattr__(self, name: str) -> Any:
        """Backend extras (batched delete, conditional writes, ...): passed through, counted by name."""
        attr = getattr(self.inner, name)
        if name.startswith("_") or not callable(attr):
            return attr
        return self._counted_extra(name, attr)

    def _counted_extra(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if name.startswith("delete") and args and _is_key_batch(args[0]):
                keys = list(args[0])
                self._add("DELETE_BATCH", max(1, -(-len(keys) // LIST_PAGE_SIZE)))
                self._add("DELETE", len(keys))
                return fn(keys, *args[1:], **kwargs)
            self._add(name)
            return fn(*args, **kwargs)

        return call


def _is_key_batch(value: object) -> bool:
    return isinstance(value, Iterable) and not isinstance(value, str | bytes)
