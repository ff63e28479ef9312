"""``open_store(url)``: pick the ``ObjectStore`` adapter from a URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from infra.storage.base import ScannableStore
from infra.storage.local import LocalObjectStore
from infra.storage.s3 import S3ObjectStore

__all__ = ["open_store"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def open_store(url: str) -> ScannableStore:
    """Open (without any I/O) the store that ``url`` names.

    - ``file:///abs/path`` or a plain path: ``LocalObjectStore``.
    - ``s3://ACCESS:SECRET@host:port/bucket?secure=false&region=us-east-1`` (``secure`` defaults to
      true), or ``http://ACCESS:SECRET@host:port/bucket`` / ``https://...``: ``S3ObjectStore``;
      ``&public=https://files.example.com`` names the endpoint presigned links point to (the
      apps' way to the server, when the services' is an internal name).

    Credentials may be percent-encoded. Raises ``ValueError``; messages never contain them.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "":
        return LocalObjectStore(Path(url).expanduser())
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError("file:// storage URLs must name a local path: file:///abs/path")
        return LocalObjectStore(Path(unquote(parts.path)))
    if scheme not in ("s3", "http", "https"):
        raise ValueError(
            f"unsupported storage URL scheme {scheme!r}: use file://, s3://, http:// or https://"
        )

    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    secure = _flag(query.get("secure", "true")) if scheme == "s3" else scheme == "https"
    bucket = parts.path.strip("/")
    if not parts.hostname or not bucket or "/" in bucket:
        raise ValueError("S3 storage URLs look like s3://ACCESS:SECRET@host:port/bucket")
    if not parts.username or parts.password is None:
        raise ValueError("S3 storage URLs need credentials: s3://ACCESS:SECRET@host:port/bucket")
    return S3ObjectStore(
        _endpoint(parts, "S3 storage URL"),
        unquote(parts.username),
        unquote(parts.password),
        bucket,
        secure=secure,
        region=query.get("region", "us-east-1"),
        public=_public_endpoint(query["public"]) if "public" in query else None,
    )


def _public_endpoint(url: str) -> tuple[str, bool]:
    """``public=https://files.example.com[:port]``: where presigned links point."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/") or parts.username:
        raise ValueError("public= in a storage URL is http(s)://host[:port] (no path, no credentials)")
    return _endpoint(parts, "public= in a storage URL"), parts.scheme == "https"


def _endpoint(parts: SplitResult, what: str) -> str:
    """``host[:port]`` as the minio client takes it (an IPv6 address bracketed); the caller checked
    that there is a host."""
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{what} has an invalid port") from None
    name = parts.hostname or ""
    host = f"[{name}]" if ":" in name else name
    return f"{host}:{port}" if port else host


def _flag(value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(f"expected true or false in the storage URL, not {value!r}")
