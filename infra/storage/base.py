"""The ``ObjectStore`` port and the key rules every adapter enforces."""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from infra.storage.errors import InvalidKey

__all__ = [
    "MAX_KEY_LENGTH",
    "ObjectStore",
    "ScannableStore",
    "StoredObject",
    "validate_key",
    "validate_prefix",
]

MAX_KEY_LENGTH = 512
# Segments start with a letter or digit: no "", ".", "..", hidden or temporary files.
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=-]*(?:/[A-Za-z0-9][A-Za-z0-9._=-]*)*")


class ObjectStore(Protocol):
    """Bytes under '/'-separated keys such as ``sessions/<id>/frames/0001.jpg``."""

    async def ensure_buckets(self) -> None:
        """Create what the store needs (bucket, directory). Idempotent."""
        ...

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    async def get(self, key: str) -> bytes:
        """Raises ``ObjectNotFound``."""
        ...

    async def delete(self, key: str) -> None:
        """Deleting a missing key is not an error."""
        ...

    async def list(self, prefix: str) -> builtins.list[str]:
        """Every key under the folder ``prefix`` (``"sessions/<id>/"``, ending in '/'), sorted."""
        ...

    async def presign_get(self, key: str, expires: timedelta) -> str:
        """A URL to read the object without credentials until ``expires`` from now.
        Only S3 gives HTTP URLs; the local store answers a ``file://`` URL."""
        ...

    async def ping(self) -> None:
        """Raises ``StorageUnavailable`` when the store cannot be reached."""
        ...


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    #: When the object was last written (timezone-aware, UTC).
    modified: datetime


class ScannableStore(ObjectStore, Protocol):
    """A store that can also be walked in key order with each object's time (the reconciler)."""

    async def scan(self, prefix: str, *, after: str | None, limit: int) -> builtins.list[StoredObject]:
        """Up to ``limit`` objects under the folder ``prefix`` whose keys sort after ``after``
        (``None``: from the first), in key order."""
        ...


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise ``InvalidKey``."""
    if len(key) > MAX_KEY_LENGTH or not _KEY.fullmatch(key):
        raise InvalidKey(
            f"invalid object key {key[:80]!r}: use '/'-separated segments of letters, digits and ._=- "
            "that start with a letter or digit"
        )
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a safe folder (a valid key followed by '/'), else raise ``InvalidKey``."""
    if not prefix.endswith("/"):
        raise InvalidKey(f"invalid prefix {prefix[:80]!r}: a folder prefix ends in '/'")
    validate_key(prefix[:-1])
    return prefix
