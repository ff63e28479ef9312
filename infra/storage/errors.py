"""Storage errors, translated from minio/urllib3 and the filesystem at the adapter edge.

``StorageUnavailable`` is retryable; every other ``StorageError`` is permanent.
"""

from __future__ import annotations

__all__ = ["InvalidKey", "ObjectNotFound", "StorageError", "StorageUnavailable"]


class StorageError(Exception):
    """Base class of every storage error we raise. Permanent unless a subclass says otherwise."""


class StorageUnavailable(StorageError):
    """The store cannot be reached, timed out or answered 5xx. Retryable."""


class ObjectNotFound(StorageError):
    """No object under that key."""


class InvalidKey(StorageError, ValueError):
    """The key is not a safe relative path (empty, absolute, ``..``, odd characters)."""
