"""Uploader against the real local-folder store: confirm, delete locally, retry, never overwrite."""

from __future__ import annotations

import time
from pathlib import Path

from collectors.spool import JournalName, OutboxObject, convert_journal
from collectors.uploader import Uploader, confirms, file_md5
from depth_store import ObjectInfo, open_store

T0 = 1_764_000_000 * 10**9


def outbox_objects(tmp_path: Path, n: int, session: str = "s1") -> list[OutboxObject]:
    j = tmp_path / f"{session}.jnl"
    j.write_bytes(b"".join(f'SYM{i:02d} {T0 + i} D {{"i":{i}}}\n'.encode() for i in range(n)))
    objs, bad = convert_journal(j, JournalName("spot", "eu-1", session, 1), tmp_path / "outbox", 1)
    assert bad == 0
    return objs


def run_until_drained(up: Uploader, timeout: float = 20) -> bool:
    up.start()
    try:
        return up.drain(time.monotonic() + timeout)
    finally:
        up.stop()


def test_uploads_confirm_and_delete_locally(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    objs = outbox_objects(tmp_path, 5)
    done: list[OutboxObject] = []
    up = Uploader(lambda: open_store(str(store_dir)), concurrency=2, on_uploaded=done.append)
    for o in objs:
        up.submit(o)
    assert run_until_drained(up)
    store = open_store(str(store_dir))
    for o in objs:
        assert not o.path.exists()
        info = store.head(o.key)
        assert info is not None and info.size == o.size
    assert {o.key for o in done} == {o.key for o in objs}
    assert up.uploaded_objects == 5 and up.pending_count == 0


def test_a_local_store_on_the_spool_disk_gets_each_object_linked_not_copied(tmp_path: Path) -> None:
    """The outbox file becomes the stored object (same inode): no copy and no second MD5 per object."""
    store_dir = tmp_path / "store"
    objs = outbox_objects(tmp_path, 3)
    inodes = {o.key: o.path.stat().st_ino for o in objs}
    payloads = {o.key: o.path.read_bytes() for o in objs}
    up = Uploader(lambda: open_store(str(store_dir)), concurrency=2, on_uploaded=lambda o: None)
    for o in objs:
        up.submit(o)
    assert run_until_drained(up)
    for key, ino in inodes.items():
        stored = store_dir / key
        assert stored.stat().st_ino == ino and stored.stat().st_nlink == 1  # the outbox name is gone
        assert stored.read_bytes() == payloads[key]
        info = open_store(str(store_dir)).head(key)
        assert info is not None and info.content_md5 == file_md5(stored)


def test_store_down_then_back_loses_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the store's folder should be: every open fails")
    objs = outbox_objects(tmp_path, 3)
    up = Uploader(
        lambda: open_store(str(blocker / "store")),
        concurrency=2,
        on_uploaded=lambda o: None,
        backoff_initial=0.05,
        backoff_max=0.2,
    )
    for o in objs:
        up.submit(o)
    up.start()
    try:
        deadline = time.monotonic() + 10
        while up.failures < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert up.failures >= 3
        assert all(o.path.exists() for o in objs)  # nothing deleted while the store is down
        assert up.pending_count == 3
        blocker.unlink()  # the store comes back
        assert up.drain(time.monotonic() + 20)
    finally:
        up.stop()
    store = open_store(str(blocker / "store"))
    assert sorted(i.key for i in store.list("raw/")) == sorted(o.key for o in objs)


def test_leftover_already_in_the_store_is_not_overwritten(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store = open_store(str(store_dir))
    same, different = outbox_objects(tmp_path, 2)
    store.put_file(same.key, same.path)  # uploaded before a kill -9, confirmation never seen
    store.put_bytes(different.key, b"other bytes")
    up = Uploader(
        lambda: open_store(str(store_dir)), concurrency=1, on_uploaded=lambda o: None, backoff_initial=0.05
    )
    up.submit(same, leftover=True)
    up.submit(different, leftover=True)
    assert run_until_drained(up)  # a conflict does not block the queue
    assert not same.path.exists()  # identical: confirmed, deleted locally
    assert store.get_bytes(different.key) == b"other bytes"  # the store is untouched
    kept = tmp_path / "conflicts" / different.key  # ours is set aside, not lost
    assert kept.exists() and up.conflicts == 1


def test_leftover_stored_with_another_gzip_encoding_counts_as_uploaded(tmp_path: Path) -> None:
    import gzip

    store_dir = tmp_path / "store"
    store = open_store(str(store_dir))
    (obj,) = outbox_objects(tmp_path, 1)
    store.put_bytes(obj.key, gzip.compress(gzip.decompress(obj.path.read_bytes()), compresslevel=9))
    up = Uploader(lambda: open_store(str(store_dir)), concurrency=1, on_uploaded=lambda o: None)
    up.submit(obj, leftover=True)
    assert run_until_drained(up)
    assert not obj.path.exists() and up.conflicts == 0


def test_confirmation_rules(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"hello")
    md5 = file_md5(p)
    now = __import__("datetime").datetime.now()
    assert confirms(ObjectInfo("k", 5, md5, now), 5, md5)
    assert confirms(ObjectInfo("k", 5, f'"{md5}"', now), 5, md5)
    assert not confirms(ObjectInfo("k", 4, md5, now), 5, md5)
    assert not confirms(ObjectInfo("k", 5, "0" * 32, now), 5, md5)
    assert confirms(ObjectInfo("k", 5, "abc-2", now), 5, md5)  # multipart ETag: size only
    assert not confirms(None, 5, md5)
