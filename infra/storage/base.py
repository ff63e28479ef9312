"""The key rules every adapter of the ``ObjectStore`` port (``domain.ports``) enforces, and the
scannable store the reconciler walks."""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from domain.ports import ObjectStore
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
