"""open_store accepts exactly the documented URL forms."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from depth_store import ObjectStore, StoreError, open_store
from depth_store.local import LocalStore
from depth_store.s3 import S3Store


def test_plain_absolute_and_file_urls_open_local(tmp_path: Path) -> None:
    plain = open_store(str(tmp_path / "a"))
    assert isinstance(plain, LocalStore) and plain.root == (tmp_path / "a").resolve()
    via_file = open_store(f"file://{tmp_path}/b")
    assert isinstance(via_file, LocalStore) and via_file.root == (tmp_path / "b").resolve()
    localhost = open_store(f"file://localhost{tmp_path}/c")
    assert isinstance(localhost, LocalStore) and localhost.root == (tmp_path / "c").resolve()
    # The store's url opens the same store again (what subprocesses are given).
    again = open_store(plain.url)
    assert isinstance(again, LocalStore) and again.root == plain.root


def test_relative_path_resolved_to_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("rel/store")
    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "rel" / "store").resolve()
    assert os.path.isabs(store.url)
    store.put_bytes("k", b"v")
    assert (tmp_path / "rel" / "store" / "k").read_bytes() == b"v"


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://my-bucket", "my-bucket", ""),
        ("s3://my-bucket/", "my-bucket", ""),
        ("s3://my-bucket/depth/prod", "my-bucket", "depth/prod"),
        ("s3://my.bucket-1/p/", "my.bucket-1", "p"),
    ],
)
def test_s3_urls(url: str, bucket: str, prefix: str, s3_env: str) -> None:
    store = open_store(url)
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix) == (bucket, prefix)
    assert open_store(store.url).url == store.url


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "http://example.com/bucket",
        "https://s3.amazonaws.com/bucket",
        "gs://bucket/x",
        "file://otherhost/path",
        "file:relative",
        "s3://",
        "s3://Bad_Bucket/x",
        "s3://b/x",
        "s3://bucket/../escape",
        "s3://bucket/a//b",
        "s3://bucket/ok/\x00",
    ],
)
def test_unsupported_urls_refused_clearly(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # were one taken for a relative path, it would land here
    with pytest.raises(StoreError) as err:
        open_store(url)
    assert str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_scan_location_local(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    assert store.scan_location("merged/x.parquet") == (str(tmp_path.resolve() / "merged/x.parquet"), None)
    assert store.scan_location("merged/")[0].endswith("/merged/")
    assert store.scan_location("")[0] == str(tmp_path.resolve())


def test_polars_reads_through_scan_location(any_store_url: str) -> None:
    """The storage options are the ones polars needs (credentials, endpoint, region)."""
    import io

    import polars as pl

    store = open_store(any_store_url)
    frame = pl.DataFrame({"id": [1, 2, 3], "px": [1.5, 2.5, 3.5]})
    buf = io.BytesIO()
    frame.write_parquet(buf)
    store.put_bytes("merged/date=2026-11-24/part-0.parquet", buf.getvalue())
    uri, options = store.scan_location("merged/date=2026-11-24/part-0.parquet")
    assert pl.read_parquet(uri, storage_options=options).equals(frame)
    prefix_uri, options = store.scan_location("merged/")
    got = pl.scan_parquet(prefix_uri + "**/*.parquet", storage_options=options).collect()
    assert got.sort("id").select("id", "px").equals(frame)


def test_stores_pickle_to_the_same_place(any_store: ObjectStore) -> None:
    """Stores cross process boundaries (multiprocessing, executors) by re-opening from their settings."""
    import pickle

    any_store.put_bytes("p/k", b"v")
    clone = pickle.loads(pickle.dumps(any_store))
    assert type(clone) is type(any_store) and clone.url == any_store.url
    assert clone.get_bytes("p/k") == b"v"
