"""What etag a write from memory gets on each backend (shared by the store tests)."""

from __future__ import annotations

import hashlib

from depth_store import ObjectInfo, ObjectStore
from depth_store.local import LocalStore, is_write_tag


def assert_etag_of_bytes_written(store: ObjectStore, info: ObjectInfo, data: bytes) -> None:
    """S3: the etag and content MD5 are the bytes' MD5. Local: a write tag (the bytes are not hashed), and
    no content MD5 is claimed."""
    if isinstance(store, LocalStore):
        assert is_write_tag(info.etag), info.etag
        assert info.content_md5 is None
    else:
        assert info.etag == info.content_md5 == hashlib.md5(data).hexdigest()
