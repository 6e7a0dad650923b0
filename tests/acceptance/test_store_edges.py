"""``depth-collector --store`` forms (docs/collector.md): ``s3://bucket/prefix`` with the endpoint from
``AWS_ENDPOINT_URL_S3``, and ``file:///abs/path`` / a plain path naming the same local store."""

from __future__ import annotations

from pathlib import Path

import pytest

from depth_store import open_store
from tests.fixtures.moto import moto_client, new_bucket, set_s3_env


def test_s3_endpoint_from_the_s3_specific_variable(
    monkeypatch: pytest.MonkeyPatch, moto_endpoint: str
) -> None:
    set_s3_env(monkeypatch, moto_endpoint)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    bucket = new_bucket(moto_endpoint)
    store = open_store(f"s3://{bucket}/some/prefix")
    store.put_bytes("raw/x.bin", b"payload")
    listed = moto_client(moto_endpoint).list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in listed] == ["some/prefix/raw/x.bin"]
    assert store.get_bytes("raw/x.bin") == b"payload"


def test_file_url_and_plain_path_are_the_same_local_store(tmp_path: Path) -> None:
    open_store(f"file://{tmp_path}/store").put_bytes("raw/a.bin", b"1")
    assert open_store(str(tmp_path / "store")).get_bytes("raw/a.bin") == b"1"
    assert (tmp_path / "store" / "raw" / "a.bin").read_bytes() == b"1"
