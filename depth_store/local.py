"""Local-folder backend: the embedded default store.

Atomicity: every write goes to a unique temp file in a hidden folder under the root (whose name
contains ``~``, a character no valid key may hold, so no key can address it and ``list`` never shows
it), is flushed and fsync'd, then ``os.replace``d onto its key and the directory is fsync'd. A reader
therefore sees either the old object, the complete new one, or nothing — never a partial file, even
when the writer is killed (a killed writer leaves at most an orphan temp file, which
:meth:`LocalStore.remove_stale_temp_files` clears).
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from depth_store.base import (
    DeleteResult,
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    StoreError,
    _write_file_atomically,
    validate_key,
)

log = logging.getLogger("depth_store")

TEMP_DIR_NAME = ".depth-store~tmp"
"""Folder under the root holding in-flight writes; ``~`` keeps it outside every valid key."""

LOCK_DIR_NAME = "locks"
"""Sub-folder of the temp folder holding the conditional writers' lock stripes (kept, never stale)."""
_LOCK_STRIPES = 256
_ETAG_XATTR = "user.depth_store.md5"  # the etag (an MD5 or a write tag), its name kept from older releases
_WRITE_TAG_PREFIX = "w"  # a write tag's first letter: never a hex digit, so no tag reads as an MD5
_COPY_CHUNK = 1 << 20
# link(2) errors that mean "copy instead": another file system, or one without (more) hard links
_LINK_REFUSED = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP}
_FOLDER_CACHE = 65_536  # resolved folders remembered per store (cleared, not grown, past this)


def _write_tag() -> str:
    """A fresh etag for bytes written from memory: 128 random bits, unique to this write."""
    return f"{_WRITE_TAG_PREFIX}{uuid.uuid4().hex}"


def is_write_tag(etag: str | None) -> bool:
    """Whether a local etag is a write tag (not the content's MD5)."""
    return etag is not None and etag.startswith(_WRITE_TAG_PREFIX)


def _md5_of_file(path: str | Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_COPY_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _folder_before(folder_prefix: str, start_after: str) -> bool:
    """Whether every key starting with ``folder_prefix`` (``a/b/``) sorts at or before ``start_after``."""
    return folder_prefix < start_after and not start_after.startswith(folder_prefix)


def _holds_a_file(folder: Path) -> bool:
    """Whether any regular file lies under ``folder`` (stops at the first; deletes leave empty folders)."""
    return any(filenames for _dirpath, _dirnames, filenames in os.walk(folder))


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore(ObjectStore):
    """Objects are files under ``root``; the key is the relative path."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        root_path = Path(os.path.abspath(os.fspath(root)))
        try:
            root_path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create local store root {root_path}: {exc}") from exc
        if not root_path.is_dir():
            raise StoreError(f"local store root {root_path} is not a directory")
        self.root: Path = root_path.resolve()
        self.url: str = str(self.root)
        self._tmp_dir = self.root / TEMP_DIR_NAME
        self._folders: dict[str, Path] = {}  # folder key -> its resolved path (see ``_path``)

    def __repr__(self) -> str:
        return f"LocalStore({self.url!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (LocalStore, (self.url,))

    # -- paths -----------------------------------------------------------------------------------

    def _path(self, key: str, *, allow_prefix: bool = False) -> Path:
        """Validated key -> absolute path, proven to lie inside the root (defence in depth).

        A valid key has no ``..``, no empty or absolute part and no ``~`` (so never the temp folder): only a
        symbolic link inside the root could lead out of it. Folders are resolved once and remembered (a
        key's folder is shared by thousands of objects; resolving every path lstat'ed each of its parts
        and cost ≈ 70 µs a call); the object itself is checked with one ``lstat`` and resolved only when
        it is a link.
        """
        validate_key(key, allow_prefix=allow_prefix)
        if not key:
            return self.root
        folder_key, _, name = key.rstrip("/").rpartition("/")
        folder = self._folder_path(folder_key) if folder_key else self.root
        path = folder / name
        if os.path.islink(path):
            path = path.resolve()
            self._check_inside(key, path)
        return path

    def _folder_path(self, folder_key: str) -> Path:
        """The resolved folder of a key, checked inside the root; remembered only once it exists (a
        folder not yet made could still become a link)."""
        cached = self._folders.get(folder_key)
        if cached is not None:
            return cached
        path = (self.root / folder_key).resolve()
        self._check_inside(folder_key, path)
        if path.is_dir():
            if len(self._folders) >= _FOLDER_CACHE:
                self._folders.clear()
            self._folders[folder_key] = path
        return path

    def _check_inside(self, key: str, path: Path) -> None:
        if path != self.root and not path.is_relative_to(self.root):
            raise InvalidKeyError(f"key {key!r} resolves outside the store root")
        if path.is_relative_to(self._tmp_dir):
            raise InvalidKeyError(f"key {key!r} addresses the store's temp folder")

    def _key_of(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # -- writes ----------------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes | memoryview) -> ObjectInfo:
        """The etag is a write tag, not the MD5 (see :meth:`_tag_staged`): the bytes are not hashed."""
        target = self._path(key)
        return self._write_atomically(key, target, lambda fh: fh.write(data), _FromMemory(data))

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        target = self._path(key)
        digest = hashlib.md5(usedforsecurity=False)

        def copy(fh: IO[bytes]) -> None:
            # Streams (also from a pipe), hashing as it goes: one pass over the source.
            with Path(path).open("rb") as src:
                for chunk in iter(lambda: src.read(_COPY_CHUNK), b""):
                    digest.update(chunk)
                    fh.write(chunk)

        return self._write_atomically(key, target, copy, digest)

    def put_sealed_file(self, key: str, path: Path, md5: str) -> ObjectInfo:
        """Hard-link the sealed file into place: no byte copied or hashed (``md5`` is the MD5 the caller
        computed while writing it, and becomes the object's etag). A copy (:meth:`put_file`) where the store
        is on another file system or the file system refuses links. The object's modification time is the
        link's, not the file's: a listing sees it as written now (a sensor's cursor may already be past the
        time the file was sealed)."""
        target = self._path(key)
        try:
            tmp = self._new_tmp()
            try:
                os.link(path, tmp)
            except OSError as exc:
                if exc.errno in _LINK_REFUSED:
                    return self.put_file(key, path)
                raise

            def stamp(link: Path) -> None:
                os.utime(link)
                fd = os.open(link, os.O_RDONLY)
                try:
                    os.fsync(fd)  # the new link count and time (the caller fsync'd the bytes)
                    self._remember_etag(link, md5, os.fstat(fd))
                finally:
                    os.close(fd)

            st = self._link_into_place(tmp, target, stamp)
        except OSError as exc:
            raise StoreError(f"local link of {str(path)!r} as {key!r} failed: {exc}") from exc
        return self._object_info(key, md5, st)

    def _write_atomically(
        self,
        key: str,
        target: Path,
        write: Any,
        source: _FromMemory | Any,
    ) -> ObjectInfo:
        info = self._write_staged(key, target, write, source, create_only=False)
        assert info is not None
        return info

    def _write_staged(
        self,
        key: str,
        target: Path,
        write: Any,
        source: _FromMemory | Any,
        *,
        create_only: bool,
    ) -> ObjectInfo | None:
        """Temp file, fsync, etag, then rename onto ``target`` (or hard-link it, failing if it exists).

        ``source`` is the bytes written (:class:`_FromMemory`) or the MD5 digest fed while copying. The
        etag is attached to the temp file, before any reader can see the object."""
        try:
            tmp = self._new_tmp()
            try:
                with tmp.open("xb") as fh:
                    write(fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                    staged = os.fstat(fh.fileno())
                etag = self._tag_staged(tmp, staged, source)
                if create_only:
                    created = self._link_into(tmp, target)
                    tmp.unlink()
                    if not created:
                        return None
                else:
                    self._replace_into(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            st = target.stat()
        except OSError as exc:
            raise StoreError(f"local write of {key!r} failed: {exc}") from exc
        return self._object_info(key, etag, st)

    @staticmethod
    def _tag_staged(tmp: Path, st: os.stat_result, source: _FromMemory | Any) -> str:
        """The etag of a staged write, remembered on the temp file.

        Bytes from memory get a write tag (128 random bits) instead of their MD5: nothing reads these
        objects' content hash (the collector's uploads, which do, come through :meth:`put_file` and
        :meth:`put_sealed_file`), and the MD5 was the largest cost of writing a validated day (1.2 ns a
        byte, ≈ 0.55 CPU-s of the benchmark day's validate + merge). A tag is unique to its write, so it
        changes whenever the object does, as an etag must. Where the file system keeps no extended
        attribute the tag could not be found again, so the etag is the MD5, as every reader computes it.
        """
        if isinstance(source, _FromMemory):
            tag = _write_tag()
            if LocalStore._remember_etag(tmp, tag, st):
                return tag
            etag = hashlib.md5(source.data, usedforsecurity=False).hexdigest()
        else:
            etag = source.hexdigest()
        LocalStore._remember_etag(tmp, etag, st)
        return etag

    def _object_info(self, key: str, etag: str, st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=st.st_size,
            etag=etag,
            last_modified=self._mtime(st),
            content_md5=None if is_write_tag(etag) else etag,
        )

    def _link_into(self, tmp: Path, target: Path) -> bool:
        """Hard-link ``tmp`` as ``target`` unless that name exists (atomic create-if-absent)."""
        attempts = 50
        for attempt in range(attempts):
            try:
                created = self._make_parents(target.parent)
                os.link(tmp, target)
            except FileExistsError:
                return False
            except FileNotFoundError:
                if attempt == attempts - 1:
                    raise
                continue  # a concurrent delete pruned the folder: make it again
            _fsync_dir(target.parent)
            for folder in created:
                _fsync_dir(folder.parent)
            return True
        return False  # unreachable: the loop returns or raises

    # -- conditional writes ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        """An exclusive flock shared by every conditional writer of ``key`` (any process or thread).

        Keys hash onto a fixed set of lock files, so the lock folder never grows with the keys.
        """
        stripe = int(hashlib.md5(key.encode(), usedforsecurity=False).hexdigest()[:8], 16) % _LOCK_STRIPES
        lock_dir = self._tmp_dir / LOCK_DIR_NAME
        try:
            lock_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_dir / f"{stripe:03d}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"local lock for {key!r} failed: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    def put_bytes_if_absent(self, key: str, data: bytes) -> ObjectInfo | None:
        target = self._path(key)
        with self._key_lock(key):
            # The link refuses an existing name even against writers that take no lock.
            return self._write_staged(
                key, target, lambda fh: fh.write(data), _FromMemory(data), create_only=True
            )

    def put_bytes_if_match(self, key: str, data: bytes, etag: str) -> ObjectInfo | None:
        target = self._path(key)
        with self._key_lock(key):
            current = self.head(key)
            if current is None or current.etag != _bare_etag(etag):
                return None
            return self._write_atomically(key, target, lambda fh: fh.write(data), _FromMemory(data))

    def copy(self, src_key: str, dst_key: str) -> ObjectInfo:
        """A hard link under a temp name, renamed onto ``dst_key``: no bytes copied, atomic."""
        src = self._path(src_key)
        target = self._path(dst_key)
        try:
            tmp = self._new_tmp()
            try:
                os.link(src, tmp)
            except (FileNotFoundError, NotADirectoryError):
                raise ObjectNotFoundError(src_key) from None
            st = self._link_into_place(tmp, target)
        except OSError as exc:
            raise StoreError(f"local copy of {src_key!r} to {dst_key!r} failed: {exc}") from exc
        return self._info(dst_key, target, st)

    def delete_if_match(self, key: str, etag: str) -> bool:
        self._path(key)
        with self._key_lock(key):
            current = self.head(key)
            if current is None or current.etag != _bare_etag(etag):
                return False
            self.delete(key)
            return True

    def _new_tmp(self) -> Path:
        """A fresh name in the store's temp folder (inside the root: a rename from it is atomic)."""
        self._tmp_dir.mkdir(exist_ok=True)
        return self._tmp_dir / f"{uuid.uuid4().hex}.{os.getpid()}.part"

    def _link_into_place(
        self, tmp: Path, target: Path, prepare: Callable[[Path], None] | None = None
    ) -> os.stat_result:
        """Rename the hard link ``tmp`` onto ``target`` (after ``prepare(tmp)``); the link is removed if
        either fails. Returns the target's stat."""
        try:
            if prepare is not None:
                prepare(tmp)
            self._replace_into(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target.stat()

    def _replace_into(self, tmp: Path, target: Path) -> None:
        """Rename into place; a concurrent delete may prune the parent folder, so retry a few times."""
        attempts = 50
        for attempt in range(attempts):
            try:
                created = self._make_parents(target.parent)
                os.replace(tmp, target)
            except FileNotFoundError:
                if attempt == attempts - 1 or not tmp.exists():
                    raise
                continue
            _fsync_dir(target.parent)
            for folder in created:
                _fsync_dir(folder.parent)
            return

    def _make_parents(self, folder: Path) -> list[Path]:
        """mkdir -p that reports the folders it created (their parents need an fsync)."""
        missing: list[Path] = []
        cur = folder
        while cur != self.root and not cur.is_dir():
            missing.append(cur)
            cur = cur.parent
        created: list[Path] = []
        for entry in reversed(missing):
            try:
                entry.mkdir()
                created.append(entry)
            except FileExistsError:
                if not entry.is_dir():
                    raise
        return created

    # -- etag cache ------------------------------------------------------------------------------

    @staticmethod
    def _remember_etag(path: str | Path, etag: str, st: os.stat_result) -> bool:
        """Keep the etag in an xattr, tied to size and mtime so an outside edit invalidates it (the etag is
        then the MD5, recomputed). False where the file system keeps no xattrs."""
        try:
            os.setxattr(path, _ETAG_XATTR, f"{etag}:{st.st_size}:{st.st_mtime_ns}".encode())
        except (OSError, AttributeError):
            return False
        return True

    @staticmethod
    def _etag(path: str | Path, st: os.stat_result) -> str:
        try:
            cached = os.getxattr(path, _ETAG_XATTR).decode()
            etag, size, mtime = cached.split(":")
            if int(size) == st.st_size and int(mtime) == st.st_mtime_ns:
                return etag
        except (OSError, AttributeError, ValueError):
            pass
        etag = _md5_of_file(path)
        LocalStore._remember_etag(path, etag, st)
        return etag

    @staticmethod
    def _mtime(st: os.stat_result) -> dt.datetime:
        return dt.datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=dt.UTC)

    def _info(self, key: str, path: str | Path, st: os.stat_result) -> ObjectInfo:
        return self._object_info(key, self._etag(path, st), st)

    # -- reads -----------------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(key) from None
        except OSError as exc:
            raise StoreError(f"local read of {key!r} failed: {exc}") from exc

    def get_file(self, key: str, dest: Path) -> int:
        path = self._path(key)
        try:
            with path.open("rb") as src:
                _write_file_atomically(Path(dest), lambda fh: shutil.copyfileobj(src, fh, _COPY_CHUNK))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            if not path.is_file():
                raise ObjectNotFoundError(key) from None
            raise
        return Path(dest).stat().st_size

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StoreError(f"local stat of {key!r} failed: {exc}") from exc
        if not path.is_file() or path.is_symlink():
            return None
        try:
            return self._info(key, path, st)
        except FileNotFoundError:
            return None  # deleted meanwhile

    def list_folders(self, prefix: str) -> builtins.list[str]:
        """Sub-folders of ``prefix`` that hold at least one object (one directory read, not a walk)."""
        validate_key(prefix, allow_prefix=True)
        if prefix and not prefix.endswith("/"):
            raise InvalidKeyError(f"folder prefix {prefix!r} must end with '/'")
        base = self._path(prefix.rstrip("/"), allow_prefix=True) if prefix else self.root
        try:
            names = sorted(e.name for e in os.scandir(base) if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [f"{prefix}{n}/" for n in names if n != TEMP_DIR_NAME and _holds_a_file(base / n)]

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        validate_key(prefix, allow_prefix=True)
        if start_after is not None:
            validate_key(start_after, allow_prefix=True)
        folder_part = prefix.rpartition("/")[0]
        start = self._path(folder_part, allow_prefix=True)
        # os.scandir, keys built as strings: no pathlib object, lstat or relative_to per object (a
        # stream-day is thousands of objects); links (files or folders) are neither listed nor followed
        found: list[tuple[str, os.DirEntry[str]]] = []

        def scan(folder: str, folder_key: str) -> None:
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                return
            except OSError as exc:
                self._walk_error(exc)
                return
            for entry in entries:
                key = folder_key + entry.name
                if entry.is_dir(follow_symlinks=False):
                    if not folder_key and entry.name == TEMP_DIR_NAME:
                        continue
                    sub = key + "/"
                    if not (sub.startswith(prefix) or prefix.startswith(sub)):
                        continue  # a folder beside the prefix
                    if start_after is not None and _folder_before(sub, start_after):
                        continue  # every key under it sorts at or before the cursor
                    scan(entry.path, sub)
                elif (
                    entry.is_file(follow_symlinks=False)
                    and key.startswith(prefix)
                    and (start_after is None or key > start_after)
                ):
                    found.append((key, entry))

        scan(str(start), folder_part + "/" if folder_part else "")
        found.sort(key=lambda item: item[0])
        for key, entry in found:
            try:
                st = entry.stat(follow_symlinks=False)
                info = self._info(key, entry.path, st)  # a str: no Path object per object
            except FileNotFoundError:
                continue  # deleted while listing
            yield info

    @staticmethod
    def _walk_error(exc: OSError) -> None:
        if exc.errno != errno.ENOENT:
            raise StoreError(f"local listing failed: {exc}") from exc

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except IsADirectoryError:
            return  # a "folder" is not an object
        except OSError as exc:
            raise StoreError(f"local delete of {key!r} failed: {exc}") from exc
        try:
            _fsync_dir(path.parent)
        except FileNotFoundError:
            return  # a concurrent delete already pruned the folder: the removal is durable with it
        self._prune_empty_parents(path.parent)

    def delete_many(self, keys: Iterable[str]) -> DeleteResult:
        """One unlink per key (a local delete is cheap); per-key failures are reported, not raised."""
        result = DeleteResult()
        for key in keys:
            try:
                self.delete(key)
            except StoreError as exc:
                result.errors[key] = str(exc)
                continue
            result.deleted.append(key)
        result.requests = len(result.deleted) + len(result.errors)
        return result

    def _prune_empty_parents(self, folder: Path) -> None:
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:
                return  # not empty (or already gone / raced with a writer): stop
            folder = folder.parent

    def scan_location(self, key: str) -> tuple[str, dict[str, str] | None]:
        path = self._path(key, allow_prefix=True)
        text = str(path)
        if key.endswith("/") and not text.endswith("/"):
            text += "/"
        return text, None

    # -- housekeeping ----------------------------------------------------------------------------

    def remove_stale_temp_files(self, older_than_seconds: float = 24 * 3600) -> int:
        """Delete temp files left by killed writers (they were never visible); returns how many."""
        removed = 0
        cutoff = time.time() - older_than_seconds
        if not self._tmp_dir.is_dir():
            return 0
        for entry in self._tmp_dir.iterdir():
            if entry.name == LOCK_DIR_NAME:
                continue  # lock stripes are reused, never stale
            try:
                if entry.stat().st_mtime < cutoff:
                    if entry.is_dir():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        if removed:
            log.info("removed %d stale temp files under %s", removed, self._tmp_dir)
        return removed


class _FromMemory:
    """The bytes of a write from memory (their MD5 is the etag only where no write tag can be kept)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = data


def _bare_etag(etag: str) -> str:
    """ETags are compared without the quotes S3 puts around them."""
    return etag.strip().strip('"')
