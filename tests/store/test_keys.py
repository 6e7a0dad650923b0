"""Keys that try to escape the prefix are refused with InvalidKeyError before any I/O."""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depth_store import InvalidKeyError, ObjectStore, open_store
from depth_store.local import TEMP_DIR_NAME, LocalStore
from depth_store.s3 import S3Config, S3Store
from exchange_sim.tcp_proxy import TcpProxy

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
_FUZZ_ROOT = Path(tempfile.gettempdir()) / "depth-store-key-fuzz"
BAD_PREFIXES = ["../", "/", "a//", "..", "./", "\x00", "é/", "a\\"]


def _every_operation(store: ObjectStore, key: str, tmp_file: Path) -> list[str]:
    """Run each keyed operation with ``key``; return the names of those NOT refused."""
    not_refused = []
    ops = {
        "put_bytes": lambda: store.put_bytes(key, b"x"),
        "put_file": lambda: store.put_file(key, tmp_file),
        "put_sealed_file": lambda: store.put_sealed_file(key, tmp_file, "0" * 32),
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


def test_local_symlinks_out_of_root_refused_after_the_folder_was_remembered(tmp_path: Path) -> None:
    """The store remembers resolved folders: an object that is itself a link out of the root, in a folder
    already used, is still refused (read and write)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"not the store's")
    store = LocalStore(tmp_path / "store")
    store.put_bytes("a/b/ok", b"1")
    assert store.get_bytes("a/b/ok") == b"1"  # the folder a/b is now remembered
    (tmp_path / "store" / "a" / "b" / "leak").symlink_to(outside / "secret")
    with pytest.raises(InvalidKeyError):
        store.get_bytes("a/b/leak")
    with pytest.raises(InvalidKeyError):
        store.put_bytes("a/b/leak", b"escape")
    assert (outside / "secret").read_bytes() == b"not the store's"
    (tmp_path / "store" / "a" / "inside").symlink_to(tmp_path / "store" / "a" / "b" / "ok")
    assert store.get_bytes("a/inside") == b"1"  # a link that stays inside the root is followed


def test_temp_folder_never_listed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("a/b", b"1")
    (tmp_path / TEMP_DIR_NAME / "orphan.part").write_bytes(b"partial")
    assert [o.key for o in store.list()] == ["a/b"]
    assert store.remove_stale_temp_files(older_than_seconds=0) == 1
    assert not (tmp_path / TEMP_DIR_NAME / "orphan.part").exists()


_KEY_ALPHABET = st.sampled_from([*"ab./\\\x00~ é=-_+", "..", "//", "%2e", "\u2215"])


@functools.cache
def _fuzz_stores() -> tuple[LocalStore, S3Store]:
    """Made once: building a boto3 client per example would dominate the run."""
    return LocalStore(_FUZZ_ROOT), S3Store("bucket", "pre/fix", config=S3Config())


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(_KEY_ALPHABET, min_size=0, max_size=12))
def test_no_key_addresses_anything_outside_the_prefix(parts: list[str]) -> None:
    """Whatever the text, a key is refused or lands strictly inside the root / under the prefix."""
    key = "".join(parts)
    local, s3 = _fuzz_stores()
    try:
        path = local._path(key)
    except InvalidKeyError:
        pass
    else:
        assert path.is_relative_to(local.root) and path != local.root
        assert not path.is_relative_to(local.root / TEMP_DIR_NAME)
    try:
        full = s3._full_key(key)
    except InvalidKeyError:
        return
    assert full.startswith("pre/fix/")
    assert not ({"", ".", ".."} & set(full.split("/")))
