"""``ObjectStore`` on a local directory: the embedded default and the unit-test double."""

from __future__ import annotations

import asyncio
import builtins
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from infra.storage.base import StoredObject, validate_key, validate_prefix
from infra.storage.errors import ObjectNotFound, StorageError, StorageUnavailable

__all__ = ["LocalObjectStore"]


class LocalObjectStore:
    """Files under ``root``, one per key. Writes are atomic (temporary file + ``os.replace``).

    Content types are not kept. ``presign_get`` answers a ``file://`` URL, which only this host
    can read: presigned HTTP URLs need the S3 store.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    async def ensure_buckets(self) -> None:
        with _os_errors():
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        with _os_errors():
            await asyncio.to_thread(_write_atomic, path, data)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"no object {key}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror}") from exc

    async def delete(self, key: str) -> None:
        path = self._path(key)
        with _os_errors():
            await asyncio.to_thread(path.unlink, missing_ok=True)

    async def list(self, prefix: str) -> builtins.list[str]:
        folder = self.root.joinpath(*validate_prefix(prefix).rstrip("/").split("/"))
        with _os_errors():
            return await asyncio.to_thread(_files_under, folder, prefix)

    async def scan(self, prefix: str, *, after: str | None, limit: int) -> builtins.list[StoredObject]:
        folder = self.root.joinpath(*validate_prefix(prefix).rstrip("/").split("/"))
        with _os_errors():
            return await asyncio.to_thread(self._scan, folder, prefix, after, limit)

    def _scan(self, folder: Path, prefix: str, after: str | None, limit: int) -> builtins.list[StoredObject]:
        keys = [key for key in _files_under(folder, prefix) if after is None or key > after][:limit]
        found = []
        for key in keys:
            try:
                stamp = self._path(key).stat().st_mtime
            except FileNotFoundError:  # deleted meanwhile
                continue
            found.append(StoredObject(key, datetime.fromtimestamp(stamp, UTC)))
        return found

    async def presign_get(self, key: str, expires: timedelta) -> str:
        return self._path(key).as_uri()

    async def ping(self) -> None:
        if not await asyncio.to_thread(os.access, self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable(f"{self.root} is not a writable directory")

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))


def _files_under(folder: Path, prefix: str) -> list[str]:
    """Keys of the files below ``folder`` (temporary ``.tmp-`` files are not objects)."""
    if not folder.is_dir():
        return []
    keys = []
    for dirpath, _, filenames in os.walk(folder):
        relative = Path(dirpath).relative_to(folder).as_posix()
        for name in filenames:
            if not name.startswith("."):
                keys.append(prefix + (name if relative == "." else f"{relative}/{name}"))
    return sorted(keys)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)  # never a valid key: starts with "."
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _os_errors() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise StorageError(f"{exc.strerror}: {exc.filename}") from exc
