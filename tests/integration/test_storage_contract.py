"""One contract for every ObjectStore: S3 (real SeaweedFS) and the local directory."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit
from uuid import uuid4

import httpx
import pytest

from infra.storage import InvalidKey, LocalObjectStore, ObjectNotFound, ObjectStore

BAD_KEYS = [
    "",
    "/etc/passwd",
    "../x",
    "a/../../x",
    "a/./b",
    "a//b",
    "a/",
    ".hidden",
    "a\\b",
    "a\x00b",
    "x" * 600,
]


@pytest.fixture
async def local_store(tmp_path: Path) -> ObjectStore:
    store = LocalObjectStore(tmp_path / "objects")
    await store.ensure_buckets()
    return store


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    chosen: ObjectStore = request.getfixturevalue(f"{request.param}_store")
    return chosen


def new_key(name: str = "frame.jpg") -> str:
    return f"sessions/{uuid4()}/{name}"


async def read_presigned(url: str) -> bytes:
    if url.startswith("file://"):
        return await asyncio.to_thread(Path(unquote(urlsplit(url).path)).read_bytes)
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
    response.raise_for_status()
    return response.content


async def test_put_get_roundtrip(store: ObjectStore) -> None:
    key = new_key()
    data = bytes(range(256)) * 1000
    await store.put(key, data, "image/jpeg")
    assert await store.get(key) == data


async def test_put_overwrites(store: ObjectStore) -> None:
    key = new_key()
    await store.put(key, b"one", "text/plain")
    await store.put(key, b"two", "text/plain")
    assert await store.get(key) == b"two"


async def test_empty_object(store: ObjectStore) -> None:
    key = new_key("empty.bin")
    await store.put(key, b"")
    assert await store.get(key) == b""


async def test_missing_key_is_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        await store.get(new_key())


async def test_delete(store: ObjectStore) -> None:
    key = new_key()
    await store.put(key, b"bye", "text/plain")
    await store.delete(key)
    with pytest.raises(ObjectNotFound):
        await store.get(key)
    await store.delete(key)  # deleting again is fine


async def test_presigned_url_reads_the_object(store: ObjectStore) -> None:
    key = new_key("reference.png")
    await store.put(key, b"\x89PNG presigned", "image/png")
    url = await store.presign_get(key, timedelta(minutes=5))
    assert await read_presigned(url) == b"\x89PNG presigned"


async def test_ping_and_ensure_buckets_are_idempotent(store: ObjectStore) -> None:
    await store.ensure_buckets()
    await store.ensure_buckets()
    await store.ping()


@pytest.mark.parametrize("key", BAD_KEYS, ids=[repr(k[:12]) for k in BAD_KEYS])
async def test_unsafe_keys_are_rejected(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        await store.put(key, b"x", "text/plain")
    with pytest.raises(InvalidKey):
        await store.get(key)
    with pytest.raises(InvalidKey):
        await store.delete(key)
    with pytest.raises(InvalidKey):
        await store.presign_get(key, timedelta(minutes=1))


async def test_list_returns_every_key_under_a_folder(store: ObjectStore) -> None:
    folder = f"sessions/{uuid4()}/"
    keys = [f"{folder}reference.jpg", f"{folder}frames/00000001.jpg", f"{folder}frames/00000002.jpg"]
    for key in keys:
        await store.put(key, b"x", "image/jpeg")
    await store.put(f"sessions/{uuid4()}/reference.jpg", b"other session", "image/jpeg")
    assert await store.list(folder) == sorted(keys)
    for key in await store.list(folder):
        await store.delete(key)
    assert await store.list(folder) == []


async def test_list_of_a_missing_folder_is_empty(store: ObjectStore) -> None:
    assert await store.list(f"sessions/{uuid4()}/") == []


@pytest.mark.parametrize("prefix", ["sessions/x", "/sessions/", "../", "a//", ""])
async def test_unsafe_prefixes_are_rejected(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(InvalidKey):
        await store.list(prefix)
