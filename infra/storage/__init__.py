"""Object storage: the ``ObjectStore`` port, its S3 and local-directory adapters, ``open_store``."""

from infra.storage.base import ObjectStore, ScannableStore, StoredObject, validate_key
from infra.storage.errors import InvalidKey, ObjectNotFound, StorageError, StorageUnavailable
from infra.storage.local import LocalObjectStore
from infra.storage.s3 import S3ObjectStore
from infra.storage.url import open_store

__all__ = [
    "InvalidKey",
    "LocalObjectStore",
    "ObjectNotFound",
    "ObjectStore",
    "S3ObjectStore",
    "ScannableStore",
    "StorageError",
    "StorageUnavailable",
    "StoredObject",
    "open_store",
    "validate_key",
]
