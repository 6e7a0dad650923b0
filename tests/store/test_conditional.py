"""Conditional writes (create-if-absent, compare-and-swap, delete-if-match) on both backends.

They are the store-side guard of "one writer per day" (a lease) and of publishing a merged day
(the manifest replaced only if it is still the version the merge started from).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from depth_store import ObjectNotFoundError, ObjectStore, open_store
from depth_store.counting import CountingStore
from depth_store.local import TEMP_DIR_NAME, LocalStore
from tests.store.etags import assert_etag_of_bytes_written

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_put_if_absent_creates_once(any_store: ObjectStore) -> None:
    first = any_store.put_bytes_if_absent("lease/a.json", b"run-1")
    assert first is not None
    assert_etag_of_bytes_written(any_store, first, b"run-1")
    assert any_store.put_bytes_if_absent("lease/a.json", b"run-2") is None
    assert any_store.get_bytes("lease/a.json") == b"run-1"
    assert (any_store.head("lease/a.json") or first).etag == first.etag


def test_put_if_absent_after_delete_creates_again(any_store: ObjectStore) -> None:
    assert any_store.put_bytes_if_absent("k/x", b"1") is not None
    any_store.delete("k/x")
    again = any_store.put_bytes_if_absent("k/x", b"2")
    assert again is not None and any_store.get_bytes("k/x") == b"2"


def test_put_if_match_swaps_only_the_expected_version(any_store: ObjectStore) -> None:
    v1 = any_store.put_bytes("m/manifest.json", b"v1")
    v2 = any_store.put_bytes_if_match("m/manifest.json", b"v2", v1.etag or "")
    assert v2 is not None
    assert_etag_of_bytes_written(any_store, v2, b"v2")
    assert (any_store.head("m/manifest.json") or v1).etag == v2.etag  # the returned etag is the stored one
    # A writer still holding v1's etag is refused and changes nothing.
    assert any_store.put_bytes_if_match("m/manifest.json", b"stale", v1.etag or "") is None
    assert any_store.get_bytes("m/manifest.json") == b"v2"
    # Quoted etags (as S3 prints them) are accepted too.
    v3 = any_store.put_bytes_if_match("m/manifest.json", b"v3", f'"{v2.etag}"')
    assert v3 is not None and any_store.get_bytes("m/manifest.json") == b"v3"


def test_put_if_match_on_absent_key_is_refused(any_store: ObjectStore) -> None:
    assert any_store.put_bytes_if_match("m/none.json", b"x", hashlib.md5(b"x").hexdigest()) is None
    assert any_store.head("m/none.json") is None


def test_delete_if_match(any_store: ObjectStore) -> None:
    info = any_store.put_bytes("lease/d.json", b"mine")
    assert any_store.delete_if_match("lease/d.json", hashlib.md5(b"other").hexdigest()) is False
    assert any_store.get_bytes("lease/d.json") == b"mine"
    assert any_store.delete_if_match("lease/d.json", info.etag or "") is True
    assert any_store.head("lease/d.json") is None
    assert any_store.delete_if_match("lease/d.json", info.etag or "") is False


def test_concurrent_compare_and_swap_has_one_winner(any_store: ObjectStore) -> None:
    """Eight threads swap from the same version: exactly one succeeds, the store holds its bytes."""
    base = any_store.put_bytes("m/race.json", b"base")
    barrier = threading.Barrier(8)
    results: dict[int, Any] = {}

    def swap(i: int) -> None:
        barrier.wait()
        results[i] = any_store.put_bytes_if_match("m/race.json", f"writer-{i}".encode(), base.etag or "")

    threads = [threading.Thread(target=swap, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, info in results.items() if info is not None]
    assert len(winners) == 1
    assert any_store.get_bytes("m/race.json") == f"writer-{winners[0]}".encode()


def test_concurrent_create_has_one_winner(any_store: ObjectStore) -> None:
    barrier = threading.Barrier(8)
    results: dict[int, Any] = {}

    def create(i: int) -> None:
        barrier.wait()
        results[i] = any_store.put_bytes_if_absent("lease/race.json", f"writer-{i}".encode())

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, info in results.items() if info is not None]
    assert len(winners) == 1
    assert any_store.get_bytes("lease/race.json") == f"writer-{winners[0]}".encode()


def test_local_conditional_writes_across_processes(tmp_path: Path) -> None:
    """Separate processes contending for one name: one creates it; the lock files stay unlisted."""
    root = tmp_path / "store"
    LocalStore(root)
    code = (
        "import sys; from depth_store import open_store; "
        "r = open_store(sys.argv[1]).put_bytes_if_absent('lease/p.json', sys.argv[2].encode()); "
        "print('won' if r else 'lost')"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(root), f"proc-{i}"],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            env=dict(os.environ),
        )
        for i in range(4)
    ]
    outs = [p.communicate(timeout=60)[0].decode().strip() for p in procs]
    assert sorted(outs) == ["lost", "lost", "lost", "won"]
    store = LocalStore(root)
    assert [o.key for o in store.list()] == ["lease/p.json"]
    assert (root / TEMP_DIR_NAME / "locks").is_dir()
    assert store.remove_stale_temp_files(older_than_seconds=-1) == 0  # lock stripes are kept


def test_s3_conditional_put_is_really_conditional_on_the_server(s3_env: str, s3_client: Any) -> None:
    """The refusal comes from S3 itself (If-None-Match / If-Match), not a HEAD before the put."""
    store = open_store(s3_env)
    bucket, _, prefix = s3_env[len("s3://") :].partition("/")
    info = store.put_bytes_if_absent("lease/s.json", b"one")
    assert info is not None
    # Someone else replaces the object behind our back: our compare-and-swap must now be refused.
    s3_client.put_object(Bucket=bucket, Key=f"{prefix}/lease/s.json", Body=b"intruder")
    assert store.put_bytes_if_match("lease/s.json", b"two", info.etag or "") is None
    assert store.get_bytes("lease/s.json") == b"intruder"


def test_copy_is_whole_and_replaces_atomically(any_store: ObjectStore) -> None:
    src = any_store.put_bytes("staging/v1/part-0.parquet", b"version one")
    any_store.put_bytes("merged/part-0.parquet", b"old")
    info = any_store.copy("staging/v1/part-0.parquet", "merged/part-0.parquet")
    assert any_store.get_bytes("merged/part-0.parquet") == b"version one"
    assert info.size == src.size and info.content_md5 == src.content_md5
    any_store.delete("staging/v1/part-0.parquet")  # the copy does not depend on its source
    assert any_store.get_bytes("merged/part-0.parquet") == b"version one"
    assert (any_store.head("merged/part-0.parquet") or src).etag == info.etag
    with pytest.raises(ObjectNotFoundError):
        any_store.copy("staging/v1/absent.parquet", "merged/x.parquet")


def test_counting_store_passes_conditional_writes_through(tmp_path: Path) -> None:
    store = CountingStore(LocalStore(tmp_path / "store"))
    info = store.put_bytes_if_absent("lease/c.json", b"a")
    assert info is not None and store.put_bytes_if_absent("lease/c.json", b"b") is None
    swapped = store.put_bytes_if_match("lease/c.json", b"c", info.etag or "")
    assert swapped is not None
    store.copy("lease/c.json", "lease/d.json")
    assert store.delete_if_match("lease/c.json", swapped.etag or "")
    counts = store.snapshot()
    assert counts["PUT"] == 4 and counts["DELETE"] == 1
