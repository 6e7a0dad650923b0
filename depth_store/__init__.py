"""The one object-store abstraction: a local folder (embedded default) or S3 through boto3.

Use :func:`open_store` with a store URL (``s3://bucket/prefix``, ``file:///abs/path`` or a local path).
"""

from depth_store.base import (
    DeleteResult,
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    StoreError,
    StoreUnavailableError,
    validate_key,
)
from depth_store.factory import open_store
from depth_store.log import quiet_aws_loggers

__all__ = [
    "DeleteResult",
    "InvalidKeyError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectStore",
    "StoreError",
    "StoreUnavailableError",
    "open_store",
    "quiet_aws_loggers",
    "validate_key",
]
