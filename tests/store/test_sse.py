"""Server-side encryption option: every put asks for it, and S3 reports it on the object."""

from __future__ import annotations

from pathlib import Path

import pytest

from depth_store import StoreError, open_store
from depth_store.s3 import S3Config, S3Store

MIB = 1 << 20


def test_sse_aes256_from_env_applies_to_puts_and_multipart(
    s3_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEPTH_S3_SSE", "AES256")
    monkeypatch.setenv("DEPTH_S3_MULTIPART_THRESHOLD", str(5 * MIB))
    monkeypatch.setenv("DEPTH_S3_MULTIPART_CHUNKSIZE", str(5 * MIB))
    store = open_store(s3_env)
    assert isinstance(store, S3Store)
    store.put_bytes("enc/small", b"secret-ish")
    big = tmp_path / "big"
    big.write_bytes(b"\x01" * (11 * MIB))
    store.put_file("enc/big", big)
    for key in ("enc/small", "enc/big"):
        head = store.head_raw(key)
        assert head is not None and head.get("ServerSideEncryption") == "AES256", key


def test_sse_kms_with_key_id(s3_env: str) -> None:
    store = open_store(s3_env, s3_config=S3Config(sse="aws:kms", sse_kms_key_id="alias/depth-test"))
    assert isinstance(store, S3Store)
    info = store.put_bytes("enc/kms", b"payload")
    assert info.size == 7
    head = store.head_raw("enc/kms")
    assert head is not None and head.get("ServerSideEncryption") == "aws:kms"
    assert "depth-test" in str(head.get("SSEKMSKeyId"))
    assert store.get_bytes("enc/kms") == b"payload"


def test_no_sse_by_default(s3_env: str) -> None:
    store = open_store(s3_env)
    assert isinstance(store, S3Store)
    store.put_bytes("plain", b"x")
    head = store.head_raw("plain")
    assert head is not None and head.get("ServerSideEncryption") in (
        None,
        "AES256",
    )  # AWS now defaults to SSE-S3
    assert store.config.sse is None


@pytest.mark.parametrize(("sse", "kms"), [("des", None), ("AES256", "some-key"), ("aes256", None)])
def test_bad_sse_settings_refused(
    sse: str, kms: str | None, monkeypatch: pytest.MonkeyPatch, s3_env: str
) -> None:
    monkeypatch.setenv("DEPTH_S3_SSE", sse)
    if kms:
        monkeypatch.setenv("DEPTH_S3_SSE_KMS_KEY_ID", kms)
    with pytest.raises(StoreError, match=r"DEPTH_S3_SSE|encryption"):
        open_store(s3_env)


def test_kms_objects_still_report_their_content_md5(s3_env: str, tmp_path: Path) -> None:
    """SSE-KMS ETags are not MD5s: content_md5 is what confirms an upload byte for byte."""
    import hashlib

    store = open_store(
        s3_env,
        s3_config=S3Config(
            sse="aws:kms",
            sse_kms_key_id="alias/depth-test",
            multipart_threshold=5 * MIB,
            multipart_chunksize=5 * MIB,
        ),
    )
    small = b"payload"
    big = tmp_path / "big"
    big.write_bytes(b"\x02" * (6 * MIB))
    for info, expected in (
        (store.put_bytes("enc/small", small), hashlib.md5(small).hexdigest()),
        (store.put_file("enc/big", big), hashlib.md5(big.read_bytes()).hexdigest()),
    ):
        assert info.content_md5 == expected
        head = store.head(info.key)
        assert head is not None and head.content_md5 == expected and head.etag == info.etag
