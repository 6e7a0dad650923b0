"""The request-counting wrapper counts what the wrapped store is asked, by kind, on both backends."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from depth_store import ObjectNotFoundError, ObjectStore
from depth_store.counting import CountingStore


def test_counts_every_request_by_kind(any_store: ObjectStore, tmp_path: Path) -> None:
    store = CountingStore(any_store)
    assert store.snapshot() == {"PUT": 0, "GET": 0, "HEAD": 0, "LIST": 0, "DELETE": 0}
    store.put_bytes("raw/a/1", b"one")
    src = tmp_path / "f"
    src.write_bytes(b"file")
    store.put_file("raw/a/2", src)
    store.put_sealed_file("raw/a/3", src, hashlib.md5(b"file").hexdigest())
    assert store.get_bytes("raw/a/1") == b"one"
    assert store.get_file("raw/a/2", tmp_path / "g") == 4
    assert store.head("raw/a/1") is not None
    assert store.exists("raw/a/absent") is False
    assert [o.key for o in store.list("raw/")] == ["raw/a/1", "raw/a/2", "raw/a/3"]
    assert list(store.list("nothing/")) == []
    store.delete("raw/a/1")
    with pytest.raises(ObjectNotFoundError):
        store.get_bytes("raw/a/1")  # a failed request is still a request
    assert store.snapshot() == {"PUT": 3, "GET": 3, "HEAD": 2, "LIST": 2, "DELETE": 1}
    assert store.bytes_snapshot() == {"PUT": 11, "GET": 7}
    assert store.snapshot_and_reset()["PUT"] == 3
    assert store.snapshot() == {"PUT": 0, "GET": 0, "HEAD": 0, "LIST": 0, "DELETE": 0}
    assert store.url == any_store.url


def test_list_counts_one_page_per_thousand_keys(tmp_path: Path) -> None:
    from depth_store import open_store

    store = CountingStore(open_store(str(tmp_path / "store")))
    for i in range(2001):
        store.inner.put_bytes(f"p/{i:05d}", b"x")  # not counted: straight to the inner store
    assert sum(1 for _ in store.list("p/")) == 2001
    assert store.snapshot()["LIST"] == 3  # pages of 1,000, 1,000 and 1
    store.reset()
    it = store.list("p/")
    for _ in range(1000):
        next(it)
    assert store.snapshot()["LIST"] == 1  # abandoned after the first page


def test_counts_are_exact_under_concurrent_use(tmp_path: Path) -> None:
    from depth_store import open_store

    store = CountingStore(open_store(str(tmp_path / "store")))

    def work(n: int) -> None:
        for i in range(50):
            store.put_bytes(f"t/{n}/{i}", b"x")
            store.head(f"t/{n}/{i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = store.snapshot()
    assert counts["PUT"] == 400 and counts["HEAD"] == 400


_COUNTED_WORKLOAD = """
import multiprocessing, sys
from depth_store import open_store

def child(url):
    open_store(url).put_bytes("c/1", b"x")

if __name__ == "__main__":
    url = sys.argv[1]
    open_store(url).put_bytes("a/1", b"x")
    store = open_store(url)  # a second opening counts into the same per-process counter
    store.get_bytes("a/1")
    list(store.list("a/"))
    p = multiprocessing.get_context("spawn").Process(target=child, args=(url,))
    p.start()
    p.join()
"""


def test_request_counts_env_counts_every_process_of_a_workload(tmp_path: Path) -> None:
    """DEPTH_STORE_REQUEST_COUNTS: each process (also a multiprocessing child, which leaves by os._exit)
    writes its own counts at exit, so a run spread over step processes is counted whole."""
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "workload.py"
    script.write_text(_COUNTED_WORKLOAD)
    counts = tmp_path / "counts"
    env = {**os.environ, "DEPTH_STORE_REQUEST_COUNTS": str(counts)}
    subprocess.run([sys.executable, str(script), str(tmp_path / "store")], env=env, check=True, timeout=60)
    by_pid = [json.loads(f.read_text())["requests"] for f in sorted(counts.glob("*.json"))]
    assert sorted((r["PUT"], r["GET"], r["LIST"]) for r in by_pid) == [(1, 0, 0), (1, 1, 1)]
