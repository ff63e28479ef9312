"""LocalObjectStore details beyond the shared contract (tests/integration/test_storage_contract.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from infra.storage import InvalidKey, LocalObjectStore, StorageUnavailable, validate_key


def tree(root: Path) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*"))


@pytest.mark.parametrize("key", ["a", "sessions/0f3a/frames/0001.jpg", "A-b_c.d=e/f", "x" * 512])
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key", ["", "/abs", "../up", "a/../b", "a/.", "a//b", "a/", ".tmp-x", "a b", "ü", "x" * 513]
)
def test_invalid_keys(key: str) -> None:
    with pytest.raises(InvalidKey):
        validate_key(key)
    with pytest.raises(ValueError):  # InvalidKey is a ValueError too
        validate_key(key)


async def test_writes_land_under_root_without_leftovers(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    await store.put("s/1/frame.jpg", b"jpeg", "image/jpeg")
    await store.put("s/1/frame.jpg", b"jpeg2", "image/jpeg")
    assert tree(tmp_path) == ["s", "s/1", "s/1/frame.jpg"]  # no temporary files left behind
    assert (tmp_path / "s/1/frame.jpg").read_bytes() == b"jpeg2"


async def test_presign_is_a_file_url(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    assert await store.presign_get("a/b.txt", timedelta(minutes=1)) == (tmp_path / "a/b.txt").as_uri()


async def test_ping_needs_a_writable_root(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "missing")
    with pytest.raises(StorageUnavailable):
        await store.ping()
    await store.ensure_buckets()
    await store.ping()
