"""Local backend: concurrent writers and deleters in the same folders never lose a completed put."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from depth_store.local import TEMP_DIR_NAME, LocalStore


def test_puts_survive_concurrent_deletes_pruning_their_folders(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    kept = [f"raw/d{i % 5}/keep-{i:04d}" for i in range(150)]

    def churn(i: int) -> None:
        # Put then delete a neighbour: the delete prunes the folder whenever it looks empty.
        key = f"raw/d{i % 5}/churn-{i:04d}"
        store.put_bytes(key, b"c")
        store.delete(key)

    def keep(key: str) -> None:
        store.put_bytes(key, key.encode())

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(churn, i) for i in range(150)] + [pool.submit(keep, k) for k in kept]
        for future in futures:
            future.result()  # no put may fail because a folder vanished under it

    assert [o.key for o in store.list()] == sorted(kept)
    assert all(store.get_bytes(k) == k.encode() for k in kept)
    assert list((tmp_path / TEMP_DIR_NAME).iterdir()) == []
