"""Put/get/head/list/delete behave the same on both backends."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from depth_store import ObjectNotFoundError, ObjectStore
from depth_store.local import LocalStore, is_write_tag
from tests.store.etags import assert_etag_of_bytes_written


def test_put_get_head_list_delete_round_trip(any_store: ObjectStore) -> None:
    data = b"hello\nworld\n"
    info = any_store.put_bytes("raw/a/b.txt", data)
    assert info.key == "raw/a/b.txt"
    assert info.size == len(data)
    assert_etag_of_bytes_written(any_store, info, data)

    assert any_store.get_bytes("raw/a/b.txt") == data
    head = any_store.head("raw/a/b.txt")
    assert head is not None and head.size == len(data) and head.etag == info.etag
    assert head.last_modified.tzinfo is not None
    assert any_store.exists("raw/a/b.txt")

    any_store.put_bytes("raw/a/c.txt", b"c")
    any_store.put_bytes("raw/b.txt", b"b")
    any_store.put_bytes("other/x", b"x")
    assert [o.key for o in any_store.list("raw/")] == ["raw/a/b.txt", "raw/a/c.txt", "raw/b.txt"]
    assert [o.key for o in any_store.list("raw/a")] == ["raw/a/b.txt", "raw/a/c.txt"]
    assert [o.key for o in any_store.list()] == ["other/x", "raw/a/b.txt", "raw/a/c.txt", "raw/b.txt"]

    any_store.delete("raw/a/b.txt")
    any_store.delete("raw/a/b.txt")  # idempotent
    assert any_store.head("raw/a/b.txt") is None
    with pytest.raises(ObjectNotFoundError):
        any_store.get_bytes("raw/a/b.txt")
    assert [o.key for o in any_store.list("raw/")] == ["raw/a/c.txt", "raw/b.txt"]


def test_put_file_round_trip(any_store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    payload = bytes(range(256)) * 4096
    src.write_bytes(payload)
    info = any_store.put_file("files/src.bin", src)
    assert info.size == len(payload)
    assert any_store.get_bytes("files/src.bin") == payload
    dest = tmp_path / "down" / "copy.bin"
    assert any_store.get_file("files/src.bin", dest) == len(payload)
    assert dest.read_bytes() == payload
    assert sorted(p.name for p in dest.parent.iterdir()) == ["copy.bin"]  # no temp left
    with pytest.raises(ObjectNotFoundError):
        any_store.get_file("files/absent.bin", tmp_path / "down" / "absent.bin")
    assert not (tmp_path / "down" / "absent.bin").exists()


def test_missing_objects(any_store: ObjectStore) -> None:
    assert any_store.head("nothing/here") is None
    assert list(any_store.list("nothing/")) == []
    with pytest.raises(ObjectNotFoundError):
        any_store.get_bytes("nothing/here")


def test_etag_is_the_same_from_put_head_and_list(any_store: ObjectStore, tmp_path: Path) -> None:
    """Cleanup compares a listed etag with a later head: every path must report the same one."""
    data = b"some raw object"
    put = any_store.put_bytes("raw/x/obj", data)
    src = tmp_path / "f"
    src.write_bytes(data * 3)
    put_file = any_store.put_file("raw/x/file", src)
    for info in (put, put_file):
        head = any_store.head(info.key)
        (listed,) = [o for o in any_store.list("raw/x/") if o.key == info.key]
        assert head is not None
        assert info.etag == head.etag == listed.etag
        assert info.size == head.size == listed.size
        assert head.content_md5 == info.content_md5
    assert_etag_of_bytes_written(any_store, put, data)
    assert put_file.content_md5 == hashlib.md5(data * 3).hexdigest()


def test_a_sealed_file_is_stored_with_the_md5_given(any_store: ObjectStore, tmp_path: Path) -> None:
    """The collector hands over the MD5 it computed while writing: every store reports it, and the object
    stays whole when the caller deletes its own file."""
    src = tmp_path / "sealed.gz"
    payload = bytes(range(256)) * 64
    src.write_bytes(payload)
    md5 = hashlib.md5(payload).hexdigest()
    info = any_store.put_sealed_file("raw/s/sealed.gz", src, md5)
    src.unlink()
    assert (info.size, info.etag, info.content_md5) == (len(payload), md5, md5)
    assert any_store.get_bytes("raw/s/sealed.gz") == payload
    head = any_store.head("raw/s/sealed.gz")
    (listed,) = any_store.list("raw/s/")
    assert head is not None and head.etag == listed.etag == md5 and head.content_md5 == md5


def test_local_store_links_a_sealed_file_and_stamps_it_now(tmp_path: Path) -> None:
    """Same file system: the object is the caller's file (no copy), modified now rather than when the file
    was sealed (a listing must see it as new), and no temp file is left."""
    import time

    store = LocalStore(tmp_path / "store")
    src = tmp_path / "sealed.gz"
    src.write_bytes(b"sealed bytes")
    os.utime(src, (1_000_000_000, 1_000_000_000))  # sealed long ago
    before = time.time()
    info = store.put_sealed_file("raw/s/a.gz", src, hashlib.md5(b"sealed bytes").hexdigest())
    target = tmp_path / "store" / "raw" / "s" / "a.gz"
    assert target.stat().st_ino == src.stat().st_ino
    assert info.last_modified.timestamp() >= before - 1
    assert [o.key for o in store.list("raw/")] == ["raw/s/a.gz"]
    assert not any((tmp_path / "store").glob("**/*.part"))


def test_local_store_copies_a_sealed_file_from_another_file_system(tmp_path: Path) -> None:
    """A spool on another file system than the store (here tmpfs): link(2) refuses (EXDEV), so the file is
    copied and hashed as ``put_file`` does."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the test's temp folder")
    store = LocalStore(tmp_path / "store")
    src = shm / f"depth-store-test-{os.getpid()}.gz"
    try:
        src.write_bytes(b"from another disk")
        info = store.put_sealed_file("raw/s/b.gz", src, hashlib.md5(b"from another disk").hexdigest())
        target = tmp_path / "store" / "raw" / "s" / "b.gz"
        assert target.stat().st_ino != src.stat().st_ino
    finally:
        src.unlink(missing_ok=True)
    assert target.read_bytes() == b"from another disk"
    assert info.content_md5 == hashlib.md5(b"from another disk").hexdigest()


def test_s3_checks_a_sealed_file_against_the_md5_computed_while_writing(s3_env: str, tmp_path: Path) -> None:
    """On S3 the given MD5 is the upload's Content-MD5: bytes that changed after they were hashed (here: a
    wrong MD5) fail the upload. Real S3 refuses them (BadDigest); moto stores them, and the put fails on the
    returned ETag instead: never confirmed either way, so the collector keeps its file."""
    from depth_store import StoreError, open_store

    store = open_store(s3_env)
    src = tmp_path / "sealed.gz"
    src.write_bytes(b"as written")
    with pytest.raises(StoreError, match=r"differs from the content md5|BadDigest|InvalidDigest"):
        store.put_sealed_file("raw/s/bad.gz", src, hashlib.md5(b"as hashed").hexdigest())
    assert src.read_bytes() == b"as written"


def test_local_bytes_get_a_write_tag_new_with_every_write(tmp_path: Path) -> None:
    """Bytes written from memory are not hashed: their etag is a tag unique to the write, the same from put,
    head and list, and a rewrite of the very same bytes is a new version that a stale etag cannot swap."""
    store = LocalStore(tmp_path / "store")
    first = store.put_bytes("validated/a.parquet", b"same bytes")
    second = store.put_bytes("validated/a.parquet", b"same bytes")
    assert is_write_tag(first.etag) and is_write_tag(second.etag) and first.etag != second.etag
    head = store.head("validated/a.parquet")
    (listed,) = store.list("validated/")
    assert head is not None and head.etag == listed.etag == second.etag and head.content_md5 is None
    assert store.put_bytes_if_match("validated/a.parquet", b"next", first.etag or "") is None
    assert store.put_bytes_if_match("validated/a.parquet", b"next", second.etag or "") is not None


def test_local_write_tag_is_on_the_object_before_anyone_can_see_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that heads the object the moment it appears must find the writer's etag, not compute
    another: the tag is attached to the staged file, before the rename makes it visible."""
    store = LocalStore(tmp_path / "store")
    real_replace = os.replace
    tags_at_rename: list[bytes] = []

    def replace(src: str | Path, dst: str | Path) -> None:
        tags_at_rename.append(os.getxattr(src, "user.depth_store.md5"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    info = store.put_bytes("merged/p.parquet", b"payload")
    assert len(tags_at_rename) == 1 and tags_at_rename[0].decode().startswith(f"{info.etag}:")


def test_local_etag_is_the_md5_where_no_tag_can_be_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a file system without extended attributes a write tag could not be found again: the etag is the
    bytes' MD5, which every later head and list computes alike."""
    store = LocalStore(tmp_path / "store")

    def no_xattrs(*_args: object) -> None:
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", no_xattrs)
    info = store.put_bytes("merged/p.parquet", b"payload")
    md5 = hashlib.md5(b"payload").hexdigest()
    assert info.etag == info.content_md5 == md5
    head = store.head("merged/p.parquet")
    assert head is not None and head.etag == md5


def test_local_write_tag_gives_way_to_the_md5_after_an_outside_edit(tmp_path: Path) -> None:
    """A tag is tied to the object's size and modification time: once someone else changes the file, its
    etag is its MD5 again, so whoever recorded the tag sees a changed object."""
    store = LocalStore(tmp_path / "store")
    info = store.put_bytes("state/x.json", b"{}")
    path = tmp_path / "store" / "state" / "x.json"
    path.write_bytes(b"[1]")  # another size: an edit within the same clock tick keeps the mtime
    head = store.head("state/x.json")
    assert head is not None and head.etag == hashlib.md5(b"[1]").hexdigest() != info.etag
