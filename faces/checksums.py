"""SHA-256 of model files, remembered per (path, mtime, size) so re-opening a pack is fast."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Final

__all__ = ["clear_cache", "file_sha256", "sha256_file"]

_CHUNK: Final = 1 << 20
_cache: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, always read from disk."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, from the cache while its path, mtime and size are unchanged."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    with _lock:
        known = _cache.get(key)
    if known is not None:
        return known
    value = sha256_file(path)
    with _lock:
        _cache[key] = value
    return value


def clear_cache() -> None:
    with _lock:
        _cache.clear()
