"""S3-specific behaviour against a real SeaweedFS."""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta
from uuid import uuid4

import httpx
import pytest
from minio import Minio

from infra.storage import S3ObjectStore, StorageError, StorageUnavailable, open_store
from tests.support.services import SeaweedFS, free_ports


async def test_ensure_buckets_creates_the_bucket(seaweedfs: SeaweedFS) -> None:
    bucket = f"fresh-{uuid4().hex[:12]}"
    store = open_store(seaweedfs.url_for(bucket))
    with pytest.raises(StorageError) as raised:  # no bucket yet
        await store.put("a/b.txt", b"x", "text/plain")
    assert not isinstance(raised.value, StorageUnavailable)
    await store.ensure_buckets()
    assert Minio(seaweedfs.endpoint, seaweedfs.access_key, seaweedfs.secret_key, secure=False).bucket_exists(
        bucket
    )
    await store.ensure_buckets()
    await store.put("a/b.txt", b"x", "text/plain")
    assert await store.get("a/b.txt") == b"x"


async def test_wrong_secret_is_a_permanent_error(seaweedfs: SeaweedFS) -> None:
    store = S3ObjectStore(
        seaweedfs.endpoint, seaweedfs.access_key, "wrong-secret", seaweedfs.bucket, secure=False
    )
    with pytest.raises(StorageError) as raised:
        await store.get("a/b.txt")
    assert not isinstance(raised.value, StorageUnavailable)


async def test_closed_port_is_unavailable_quickly() -> None:
    (port,) = free_ports(1)
    store = open_store(f"http://key:secret@127.0.0.1:{port}/bucket")
    for operation in (
        store.ping(),
        store.get("a.txt"),
        store.put("a.txt", b"x", "text/plain"),
        store.ensure_buckets(),
    ):
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            await operation
        assert time.monotonic() - started < 10


def test_secrets_stay_out_of_repr(seaweedfs: SeaweedFS) -> None:
    store = open_store(seaweedfs.url)
    assert seaweedfs.secret_key not in repr(store)
    assert seaweedfs.secret_key not in repr(vars(store))


async def test_presigned_links_name_the_public_endpoint_and_open_there(seaweedfs: SeaweedFS) -> None:
    """compose's services reach the server as s3:9000, which no app can: a link to a face image
    must name the address the apps use (``public=``), and be signed for that host."""
    port = seaweedfs.endpoint.rsplit(":", 1)[1]
    store = open_store(f"{seaweedfs.url}{'&' if '?' in seaweedfs.url else '?'}public=http://localhost:{port}")
    await store.ensure_buckets()
    await store.put("sessions/x/audit.jpg", b"face", "image/jpeg")
    url = await store.presign_get("sessions/x/audit.jpg", timedelta(minutes=5))
    assert url.startswith(f"http://localhost:{port}/")
    async with httpx.AsyncClient() as http:
        answer = await http.get(url)
    assert answer.status_code == 200 and answer.content == b"face"
    internal = await open_store(seaweedfs.url).presign_get("sessions/x/audit.jpg", timedelta(minutes=5))
    assert not internal.startswith("http://localhost")  # without public=: the services' address


async def test_a_large_image_is_stored_in_one_put_never_in_parts(seaweedfs: SeaweedFS) -> None:
    # Past 5 MiB minio uploads in parts by default; an upload cut off between two parts leaves
    # face bytes in parts that no listing shows, so no erasure or retention purge would find them.
    # One PUT: the object's ETag is its MD5 (a multipart upload's is "<md5 of md5s>-<parts>").
    store = open_store(seaweedfs.url)
    data = bytes(range(256)) * (10 * 1024 * 1024 // 256)  # 10 MiB, FACEPROOF_MAX_IMAGE_BYTES
    key = f"sessions/{uuid4().hex}/reference-input.jpg"
    await store.ensure_buckets()
    await store.put(key, data, "image/jpeg")
    client = Minio(seaweedfs.endpoint, seaweedfs.access_key, seaweedfs.secret_key, secure=False)
    stat = client.stat_object(seaweedfs.bucket, key)
    assert stat.etag == hashlib.md5(data).hexdigest()  # the S3 ETag's MD5
    assert await store.get(key) == data
