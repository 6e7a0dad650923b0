"""Upload finished raw objects and delete them locally only after the store confirmed them.

A few threads take objects oldest first. An object is deleted from the outbox only when the store's
answer to the upload has the same size and (where the store returns an MD5 ETag) the same MD5 as the
local file. While the store is down every thread backs off (jittered, exponential, capped) and the
objects simply wait in the outbox; nothing is dropped. A key that already exists (an upload whose
confirmation a killed process never saw) is compared instead of overwritten: raw objects are immutable.
"""

from __future__ import annotations

import gzip
import hashlib
import queue
import random
import re
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from collectors import logs
from collectors.spool import OutboxObject
from depth_store.base import ObjectInfo, ObjectStore, StoreError

_MD5_RE = re.compile(r"^[0-9a-f]{32}$")


class UploadMismatchError(Exception):
    """The store's confirmation does not match the local file."""


def file_md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def confirms(info: ObjectInfo | None, size: int, md5: str) -> bool:
    """Whether the store's metadata proves it holds exactly the local bytes."""
    if info is None or info.size != size:
        return False
    if info.content_md5:
        # written by our store layer: the md5 it verified on upload (SSE-KMS ETags are not an MD5)
        return info.content_md5.lower() == md5
    etag = (info.etag or "").strip('"').lower()
    # multipart ETags ("...-N") are not an MD5 of the content; the size check is all we get then
    return not _MD5_RE.fullmatch(etag) or etag == md5


class Uploader:
    """Upload threads with a shared backoff; :meth:`drain` waits for the outbox to empty."""

    def __init__(
        self,
        open_store: Callable[[], ObjectStore],
        *,
        concurrency: int,
        on_uploaded: Callable[[OutboxObject], None],
        backoff_initial: float = 0.5,
        backoff_max: float = 15.0,
    ) -> None:
        self._open_store = open_store
        self._store: ObjectStore | None = None
        self._store_lock = threading.Lock()
        self.concurrency = concurrency
        self.on_uploaded = on_uploaded
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._q: queue.PriorityQueue[tuple[int, str, OutboxObject, bool]] = queue.PriorityQueue()
        self._pending: dict[str, OutboxObject] = {}
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stop = threading.Event()
        self.abort_drain = threading.Event()  # a second SIGTERM: stop waiting for the store
        self._threads: list[threading.Thread] = []
        self._retry_at = 0.0  # monotonic; all threads wait while the store is failing
        self._failures_in_row = 0
        self.uploaded_objects = 0
        self.uploaded_bytes = 0
        self.failures = 0
        self.conflicts = 0
        self.last_success_ns = 0
        self.last_error: str | None = None

    # ---- queue ----------------------------------------------------------------------------------

    def submit(self, obj: OutboxObject, *, leftover: bool = False) -> None:
        """Queue an object; ``leftover`` ones (from an earlier run) are checked against the store first."""
        with self._lock:
            self._pending[obj.key] = obj
        self._q.put((obj.first_receive_ns, obj.key, obj, leftover))

    @property
    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        with self._lock:
            return sum(o.size for o in self._pending.values())

    def oldest_pending_ns(self) -> int | None:
        with self._lock:
            return min((o.first_receive_ns for o in self._pending.values()), default=None)

    # ---- threads --------------------------------------------------------------------------------

    def start(self) -> None:
        for i in range(self.concurrency):
            t = threading.Thread(target=self._loop, name=f"uploader-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def _store_or_open(self) -> ObjectStore:
        with self._store_lock:
            if self._store is None:
                self._store = self._open_store()
            return self._store

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                _, _, obj, leftover = self._q.get(timeout=1.0)
            except queue.Empty:
                continue
            with self._cond:  # back off while the store fails; a success elsewhere ends the wait early
                while not self._stop.is_set() and (wait := self._retry_at - time.monotonic()) > 0:
                    self._cond.wait(wait)
            if self._stop.is_set():
                self._q.put((obj.first_receive_ns, obj.key, obj, leftover))
                return
            try:
                self._upload(obj, leftover)
            except Exception as exc:
                self._failed(obj, exc)
                self._q.put((obj.first_receive_ns, obj.key, obj, leftover))
                continue
            self._succeeded(obj)

    def _upload(self, obj: OutboxObject, leftover: bool) -> None:
        store = self._store_or_open()
        md5 = obj.md5 or file_md5(obj.path)  # the converter hashed what it wrote; leftovers are read
        size = obj.path.stat().st_size
        if leftover:
            existing = store.head(obj.key)
            if existing is not None:
                if confirms(existing, size, md5) or self._same_lines(store, obj):
                    obj.path.unlink()
                    return
                self._set_aside(obj, existing.size, size)
                return
        info = store.put_sealed_file(obj.key, obj.path, md5)  # a hard link into a local store on this disk
        if not confirms(info, size, md5):
            raise UploadMismatchError(
                f"store confirmed {obj.key} with size {info.size} etag {info.etag}, local {size} md5 {md5}"
            )
        obj.path.unlink()

    @staticmethod
    def _same_lines(store: ObjectStore, obj: OutboxObject) -> bool:
        """The stored object holds the same lines, only compressed differently (another gzip library)."""
        try:
            return gzip.decompress(store.get_bytes(obj.key)) == gzip.decompress(obj.path.read_bytes())
        except (OSError, EOFError, zlib.error):
            return False

    def _set_aside(self, obj: OutboxObject, stored_size: int, local_size: int) -> None:
        """A different object already has this key: never overwrite it; keep ours in ``conflicts/``."""
        outbox = next(p for p in obj.path.parents if p.name == "outbox")
        target = outbox.parent / "conflicts" / obj.key
        target.parent.mkdir(parents=True, exist_ok=True)
        obj.path.replace(target)
        self.conflicts += 1
        logs.error(
            "upload_conflict",
            key=obj.key,
            stored_size=stored_size,
            local_size=local_size,
            kept_at=str(target),
            message="a different object already has this key; ours is kept locally, the store is untouched",
        )

    def _succeeded(self, obj: OutboxObject) -> None:
        with self._cond:
            self._pending.pop(obj.key, None)
            self.uploaded_objects += 1
            self.uploaded_bytes += obj.size
            self.last_success_ns = time.time_ns()
            if self._failures_in_row:
                logs.info("upload_recovered", after_failures=self._failures_in_row)
            self._failures_in_row = 0
            self._retry_at = 0.0
            self._cond.notify_all()
        parent = obj.path.parent
        try:  # tidy empty date/symbol folders; harmless if another thread races us
            while parent.name != "outbox" and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
        except OSError:
            pass
        self.on_uploaded(obj)

    def _failed(self, obj: OutboxObject, exc: Exception) -> None:
        with self._lock:
            self.failures += 1
            self._failures_in_row += 1
            n = self._failures_in_row
            delay = min(self.backoff_max, self.backoff_initial * 2 ** min(n - 1, 10))
            delay *= random.uniform(0.5, 1.0)
            self._retry_at = max(self._retry_at, time.monotonic() + delay)
            self.last_error = repr(exc)
        if isinstance(exc, StoreError | OSError | UploadMismatchError):
            if n == 1 or n % 20 == 0:
                logs.warning(
                    "upload_failed",
                    key=obj.key,
                    error=repr(exc),
                    failures_in_row=n,
                    pending=self.pending_count,
                    retry_in_s=round(delay, 2),
                )
        else:
            logs.error("upload_failed", key=obj.key, error=repr(exc), failures_in_row=n)
        if self._store is not None and n % 10 == 0:
            with self._store_lock:
                self._store = None  # re-open now and then: a fresh client after long outages

    # ---- shutdown -------------------------------------------------------------------------------

    def drain(self, deadline: float) -> bool:
        """Wait (monotonic ``deadline``) until nothing is pending; True when all was uploaded."""
        with self._cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0 or self.abort_drain.is_set():
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the threads; one stuck in a store call is abandoned (daemon): its file stays in the outbox."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
