"""Turn a store URL into an ObjectStore backend."""

from __future__ import annotations

from depth_store.base import ObjectStore


def open_store(url: str) -> ObjectStore:
    """``s3://bucket/prefix`` -> S3 (``AWS_ENDPOINT_URL`` honoured); ``file:///abs`` or a path -> local."""
    raise NotImplementedError("implemented by the store layer")
