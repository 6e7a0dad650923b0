"""Keys that try to escape the prefix are refused with InvalidKeyError before any I/O."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from depth_store import InvalidKeyError, ObjectStore, open_store
from depth_store.local import TEMP_DIR_NAME, LocalStore
from tests.fixtures.tcp_proxy import TcpProxy

BAD_KEYS = [
    "../x",
    "a/../../x",
    "/abs",
    "/etc/passwd",
    "a//b",
    "a/\x00b",
    "nul\x00",
    "ünïcode",
    "a\\..\\b",
    "a\\b",
    ".",
    "..",
    "a/./b",
    "a/",
    "",
    "has space",
    "new\nline",
    "x" * 1100,
    TEMP_DIR_NAME,
    f"{TEMP_DIR_NAME}/x.part",
    "~",
    "a/b?c",
    "s3://other-bucket/x",
]
BAD_PREFIXES = ["../", "/", "a//", "..", "./", "\x00", "é/", "a\\"]


def _every_operation(store: ObjectStore, key: str, tmp_file: Path) -> list[str]:
    """Run each keyed operation with ``key``; return the names of those NOT refused."""
    not_refused = []
    ops = {
        "put_bytes": lambda: store.put_bytes(key, b"x"),
        "put_file": lambda: store.put_file(key, tmp_file),
        "get_bytes": lambda: store.get_bytes(key),
        "head": lambda: store.head(key),
        "exists": lambda: store.exists(key),
        "delete": lambda: store.delete(key),
    }
    for name, op in ops.items():
        try:
            op()
        except InvalidKeyError:
            continue
        not_refused.append(name)
    return not_refused


def test_bad_keys_refused_on_local_without_io(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "store"
    store = LocalStore(root)
    src = tmp_path / "src"
    src.write_bytes(b"x")
    shutil.rmtree(root)  # any I/O attempt would now fail differently (or recreate the folder)
    for key in BAD_KEYS:
        assert _every_operation(store, key, src) == [], key
    assert not root.exists(), "an invalid key caused I/O"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "src"]
    assert list((tmp_path / "deep").iterdir()) == []


def test_bad_keys_refused_on_s3_without_io(s3_behind_proxy: tuple[str, TcpProxy], tmp_path: Path) -> None:
    url, proxy = s3_behind_proxy
    store = open_store(url)
    src = tmp_path / "src"
    src.write_bytes(b"x")
    before = proxy.stats["accepted"]
    for key in BAD_KEYS:
        assert _every_operation(store, key, src) == [], key
    for prefix in BAD_PREFIXES:
        with pytest.raises(InvalidKeyError):
            list(store.list(prefix))
        with pytest.raises(InvalidKeyError):
            store.scan_location(prefix)
    assert proxy.stats["accepted"] == before, "an invalid key opened a connection to S3"
    store.put_bytes("ok/key", b"fine")  # the same store does talk to S3 for a valid key
    assert proxy.stats["accepted"] > before


def test_bad_list_prefixes_refused(any_store: ObjectStore) -> None:
    for prefix in BAD_PREFIXES:
        with pytest.raises(InvalidKeyError):
            list(any_store.list(prefix))
        with pytest.raises(InvalidKeyError):
            any_store.scan_location(prefix)
    any_store.put_bytes("a/b", b"")
    assert [o.key for o in any_store.list("a/")] == ["a/b"]  # the valid form works


def test_local_symlink_out_of_root_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store = LocalStore(tmp_path / "store")
    (tmp_path / "store" / "link").symlink_to(outside)
    with pytest.raises(InvalidKeyError):
        store.put_bytes("link/x", b"escape")
    assert list(outside.iterdir()) == []


def test_temp_folder_never_listed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("a/b", b"1")
    (tmp_path / TEMP_DIR_NAME / "orphan.part").write_bytes(b"partial")
    assert [o.key for o in store.list()] == ["a/b"]
    assert store.remove_stale_temp_files(older_than_seconds=0) == 1
    assert not (tmp_path / TEMP_DIR_NAME / "orphan.part").exists()
