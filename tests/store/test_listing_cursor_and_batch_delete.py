"""``list(start_after=...)`` and ``delete_many`` behave the same on both backends (local folder, moto S3)."""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from depth_store import ObjectStore, open_store

N_OBJECTS = 1_503  # crosses one S3 list page and one DeleteObjects batch (1,000 each)


def _put_many(store: ObjectStore, keys: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda k: store.put_bytes(k, k.encode()), keys))


def test_start_after_lists_only_later_keys(any_store: ObjectStore) -> None:
    keys = [f"raw/s=a/date=2026-11-2{d}/{i:019d}.gz" for d in (3, 4) for i in range(3)]
    keys += ["raw/s=b/date=2026-11-24/0.gz", "raw/s=a-x/k", "raw/s=a/z"]
    _put_many(any_store, keys)
    everything = [o.key for o in any_store.list("raw/s=a/")]
    assert everything == sorted(k for k in keys if k.startswith("raw/s=a/"))
    for cursor in everything:
        assert [o.key for o in any_store.list("raw/s=a/", start_after=cursor)] == [
            k for k in everything if k > cursor
        ]
    # a cursor that is not an existing key: a folder name, a key-name prefix, before and after the prefix
    assert [o.key for o in any_store.list("raw/s=a/", start_after="raw/s=a/date=2026-11-24/")] == [
        k for k in everything if k.startswith("raw/s=a/date=2026-11-24/") or k == "raw/s=a/z"
    ]
    assert [
        o.key for o in any_store.list("raw/s=a/", start_after="raw/s=a/date=2026-11-23/0000")
    ] == everything
    assert [o.key for o in any_store.list("raw/s=a/", start_after="raw/")] == everything
    assert list(any_store.list("raw/s=a/", start_after="raw/s=a/zz")) == []
    assert list(any_store.list("raw/s=a/", start_after="zzz")) == []
    # without a prefix, across folders in key order ('-' sorts before '/')
    assert [o.key for o in any_store.list(start_after="raw/s=a-x/k")] == [
        k for k in sorted(keys) if k > "raw/s=a-x/k"
    ]


def test_start_after_crosses_a_list_page(any_store: ObjectStore) -> None:
    keys = [f"raw/obj-{i:05d}" for i in range(N_OBJECTS)]
    _put_many(any_store, keys)
    listed = [o.key for o in any_store.list("raw/", start_after=keys[200])]
    assert listed == keys[201:]
    infos = list(any_store.list("raw/", start_after=keys[-3]))
    assert [(o.key, o.size) for o in infos] == [(k, len(k)) for k in keys[-2:]]
    assert all(o.etag for o in infos)


def test_delete_many_in_batches_absent_keys_count_as_deleted(any_store: ObjectStore) -> None:
    keys = [f"raw/obj-{i:05d}" for i in range(N_OBJECTS)]
    _put_many(any_store, keys)
    any_store.put_bytes("keep/me", b"x")
    result = any_store.delete_many([*keys, "raw/never-existed"])
    assert result.ok and result.errors == {}
    assert sorted(result.deleted) == sorted([*keys, "raw/never-existed"])
    assert [o.key for o in any_store.list()] == ["keep/me"]
    if any_store.url.startswith("s3://"):
        assert result.requests == 2  # 1,504 keys: two DeleteObjects requests
    again = any_store.delete_many(keys[:5])  # idempotent
    assert again.ok and again.deleted == keys[:5]
    assert any_store.delete_many([]).deleted == []


def test_local_delete_many_reports_per_key_errors(tmp_path: Path) -> None:
    """An undeletable file (immutable attribute: even root cannot unlink it) is reported; the rest goes."""
    store = open_store(str(tmp_path / "store"))
    store.put_bytes("a/locked/x", b"x")
    store.put_bytes("a/free/y", b"y")
    locked = tmp_path / "store" / "a" / "locked" / "x"
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this filesystem")
    try:
        result = store.delete_many(["a/locked/x", "a/free/y"])
    finally:
        subprocess.run([chattr, "-i", str(locked)], check=True)
    assert result.deleted == ["a/free/y"]
    assert list(result.errors) == ["a/locked/x"] and "not permitted" in result.errors["a/locked/x"]
    assert store.head("a/locked/x") is not None


def test_counting_store_counts_batched_deletes_and_cursor_listings(tmp_path: Path) -> None:
    from depth_store.counting import CountingStore

    store = CountingStore(open_store(str(tmp_path / "store")))
    keys = [f"raw/obj-{i:05d}" for i in range(1_001)]
    for key in keys:
        store.put_bytes(key, b"x")
    store.reset()
    assert [o.key for o in store.list("raw/", start_after=keys[-2])] == keys[-1:]
    assert store.delete_many(keys).ok
    counts = store.snapshot()
    assert (counts["LIST"], counts["DELETE_BATCH"], counts["DELETE"]) == (1, 2, 1_001)
