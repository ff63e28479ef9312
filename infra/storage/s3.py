"""``ObjectStore`` on any S3-compatible server (MinIO, SeaweedFS, Ceph, AWS) via the minio client."""

from __future__ import annotations

import asyncio
import builtins
import io
import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, timedelta
from typing import ParamSpec, TypeVar

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import MIN_PART_SIZE

from infra.storage.base import StoredObject, validate_key, validate_prefix
from infra.storage.errors import ObjectNotFound, StorageError, StorageUnavailable

__all__ = ["S3ObjectStore"]

P = ParamSpec("P")
T = TypeVar("T")

CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 30.0
_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchObject"})
_BUCKET_EXISTS = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})


class S3ObjectStore:
    """One bucket on an S3 server. Blocking client calls run in worker threads.

    A dead server fails within a few seconds: short connect timeout and one connect retry.
    The secret key lives only inside the client; ``repr`` shows endpoint and bucket.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = True,
        region: str = "us-east-1",
        public: tuple[str, bool] | None = None,
    ) -> None:
        """``public``: the (endpoint, secure) that presigned links name, when the services reach
        the server at an address the apps cannot (compose's ``s3:9000``); a link is signed for the
        host it names, so it is made by a client of that endpoint (the same keys, no I/O)."""
        self.endpoint = endpoint
        self.bucket = bucket
        self.secure = secure
        self.region = region
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(
                total=3, connect=1, read=1, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)
            ),
        )
        # A known region keeps presigning local: minio would otherwise ask the server for it.
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )
        self._signer = self._client
        if public is not None:
            self._signer = Minio(
                public[0], access_key=access_key, secret_key=secret_key, secure=public[1], region=region
            )

    def __repr__(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"S3ObjectStore({scheme}://{self.endpoint}/{self.bucket})"

    async def ensure_buckets(self) -> None:
        await self._call(None, self._ensure_bucket)

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        validate_key(key)
        # One PUT whatever the size: past 5 MiB minio's default is a multipart upload, and one cut
        # off between its parts leaves face bytes in parts that listing never shows, so no erasure,
        # retention purge or reconciler would ever delete them.
        await self._call(
            key,
            self._client.put_object,
            self.bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type,
            part_size=max(len(data), MIN_PART_SIZE),
        )

    async def get(self, key: str) -> bytes:
        validate_key(key)
        return await self._call(key, self._read, key)

    async def delete(self, key: str) -> None:
        validate_key(key)
        await self._call(key, self._client.remove_object, self.bucket, key)

    async def list(self, prefix: str) -> builtins.list[str]:
        validate_prefix(prefix)
        return await self._call(prefix, self._list, prefix)

    async def scan(self, prefix: str, *, after: str | None, limit: int) -> builtins.list[StoredObject]:
        validate_prefix(prefix)
        return await self._call(prefix, self._scan, prefix, after, limit)

    async def presign_get(self, key: str, expires: timedelta) -> str:
        validate_key(key)
        return await self._call(key, self._signer.presigned_get_object, self.bucket, key, expires)

    async def ping(self) -> None:
        """Raises ``StorageUnavailable`` when unreachable; other ``StorageError``s (wrong credentials)
        are permanent."""
        await self._call(None, self._client.bucket_exists, self.bucket)

    def _ensure_bucket(self) -> None:
        if self._client.bucket_exists(self.bucket):
            return
        try:
            self._client.make_bucket(self.bucket, self.region)
        except S3Error as exc:
            if exc.code not in _BUCKET_EXISTS:  # losing a creation race to another process is fine
                raise

    def _list(self, prefix: str) -> builtins.list[str]:
        objects = self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
        return sorted(o.object_name for o in objects if o.object_name and not o.is_dir)

    def _scan(self, prefix: str, after: str | None, limit: int) -> builtins.list[StoredObject]:
        objects = self._client.list_objects(self.bucket, prefix=prefix, recursive=True, start_after=after)
        found = (
            StoredObject(o.object_name, o.last_modified.astimezone(UTC))
            for o in objects
            if o.object_name and not o.is_dir and o.last_modified is not None
        )
        return sorted(itertools.islice(found, limit), key=lambda o: o.key)

    def _read(self, key: str) -> bytes:
        response = self._client.get_object(self.bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    async def _call(
        self, key: str | None, function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run a blocking client call in a worker thread, translating its errors."""
        with _translate(key):
            return await asyncio.to_thread(function, *args, **kwargs)


@contextmanager
def _translate(key: str | None) -> Iterator[None]:
    try:
        yield
    except S3Error as exc:
        if exc.code in _NOT_FOUND:
            raise ObjectNotFound(f"no object {key}") from exc
        if exc.code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"):
            raise StorageUnavailable(f"S3 {exc.code}: {exc.message}") from exc
        raise StorageError(f"S3 {exc.code}: {exc.message}") from exc
    except ServerError as exc:
        error = StorageUnavailable if exc.status_code >= 500 else StorageError
        raise error(f"S3 server answered HTTP {exc.status_code}") from exc
    except InvalidResponseError as exc:  # a non-XML answer: a proxy, or not an S3 server at all
        status = getattr(exc, "_code", 0)  # minio keeps the HTTP status only here
        error = StorageUnavailable if isinstance(status, int) and status >= 500 else StorageError
        raise error(str(exc)[:300]) from exc
    except MinioException as exc:
        raise StorageError(str(exc)[:300]) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise StorageUnavailable(f"S3 server unreachable: {type(exc).__name__}") from exc
