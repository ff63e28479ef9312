"""I/O of the notifier: the controller's reference list and images (through infra/safe_fetch.py,
the one fetcher) and the callback PUT (the same address policy). The broker: infra/publisher.py."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from typing import Final
from urllib.parse import quote

import httpx

from domain.records import CallFlowRecord
from infra.safe_fetch import (
    FetchError,
    FetchPolicy,
    Resolver,
    UrlRefused,
    check_image,
    check_url,
    fetch,
    fetch_image,
    resolve_host,
)
from services.notifier.ports import (
    CallbackRefused,
    CallbackUnreachable,
    ReferenceImages,
    ReferencesUnavailable,
)

__all__ = [
    "MAX_RESPONSE_BYTES",
    "HttpCallbackSender",
    "SafeReferenceSource",
    "parse_reference",
]

log = logging.getLogger("faceproof.notifier")

_DATA_URL: Final = "data:"
#: How much of a controller's answer to a callback is read (only its status counts).
MAX_RESPONSE_BYTES: Final = 64 * 1024


def parse_reference(item: object) -> tuple[str, str]:
    """``("data" | "url" | "id", value)`` of one list item: a data URL, an http(s) URL or a
    Data Store id (a string, or an object with ``data``, ``url`` or ``id``)."""
    if isinstance(item, dict):
        for key in ("data", "url", "id"):
            value = item.get(key)
            if isinstance(value, str) and value:
                return parse_reference(value) if key != "id" else ("id", value)
        raise ValueError("an object without data, url or id")
    if not isinstance(item, str) or not item.strip():
        raise ValueError("not a string")
    value = item.strip()
    lowered = value[:8].lower()
    if lowered.startswith(_DATA_URL):
        return "data", value
    if lowered.startswith(("http://", "https://")):
        return "url", value
    if "://" in value or len(value) > 256:
        raise ValueError("neither a data URL, an http(s) URL nor an id")
    return "id", value


def _decode_data_url(value: str) -> bytes:
    header, _, payload = value.partition(",")
    if ";base64" not in header.lower():
        raise ValueError("the data URL is not base64")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError("the data URL is not valid base64") from error


class SafeReferenceSource:
    """GET {callback_base_url}/list/{token}, then each listed image, all through safe_fetch."""

    def __init__(self, policy: FetchPolicy, *, max_references: int) -> None:
        self._policy = policy
        self._max = max_references

    async def fetch(self, flow: CallFlowRecord) -> ReferenceImages:
        list_url = f"{flow.callback_base_url.rstrip('/')}/list/{quote(flow.token, safe='')}"
        try:
            resource = await fetch(list_url, policy=self._policy)
            items = await asyncio.to_thread(json.loads, resource.body)
        except FetchError as error:
            raise ReferencesUnavailable(f"the reference list: {type(error).__name__}: {error}") from error
        except (ValueError, UnicodeDecodeError, RecursionError) as error:  # (nested too deep to parse)
            raise ReferencesUnavailable("the reference list is not JSON") from error
        if not isinstance(items, list):
            raise ReferencesUnavailable("the reference list is not a JSON array")
        surplus = len(items) - self._max
        errors = [f"{surplus} references over the limit of {self._max}: not used"] if surplus > 0 else []
        results = await asyncio.gather(*(self._one(item, flow) for item in items[: self._max]))
        images: list[bytes] = []
        for index, result in enumerate(results):
            if isinstance(result, bytes):
                images.append(result)
            else:
                errors.append(f"reference {index}: {result}")
        if not images:
            raise ReferencesUnavailable(
                "no usable reference image" + (f" ({'; '.join(errors)})" if errors else " (empty list)")
            )
        return ReferenceImages(images=images, errors=errors)

    async def _one(self, item: object, flow: CallFlowRecord) -> bytes | str:
        """The image, or why there is none."""
        try:
            kind, value = parse_reference(item)
            if kind == "data":
                return await asyncio.to_thread(self._data_image, value)
            if kind == "id":
                if not flow.datastore_base_url:
                    return "a Data Store id, but the flow has no datastore_base_url"
                value = f"{flow.datastore_base_url.rstrip('/')}/r/{quote(value, safe='')}"
            return await fetch_image(value, policy=self._policy)
        except FetchError as error:
            return f"{type(error).__name__}: {error}"
        except ValueError as error:
            return str(error)

    def _data_image(self, data_url: str) -> bytes | str:
        """A data URL's image, decoded and checked (on a worker thread: both take CPU)."""
        data = _decode_data_url(data_url)
        check_image(data, max_pixels=self._policy.max_pixels)
        if len(data) > self._policy.max_bytes:
            return "over the byte limit"
        return data


class HttpCallbackSender:
    """PUT to a controller: the URL checked by the fetcher's policy, the connection pinned to the
    checked address (no second DNS lookup), no redirects followed, one time limit, and at most
    ``max_response_bytes`` of the answer read (only its status counts; a controller that streams
    an endless answer cannot hold the notifier)."""

    def __init__(
        self,
        policy: FetchPolicy,
        *,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
        resolve: Resolver = resolve_host,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self._policy = policy
        self._timeout = timeout_s
        self._resolve = resolve
        self._max_response = max_response_bytes
        # No connection is kept between callbacks: each goes to the checked address with the name
        # only in SNI and Host, and httpx's pool keys a connection by address, not name: a TLS
        # connection opened (and its certificate checked) for one controller's name would carry
        # another client's signed callback to a host that shares the address.
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def put(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        # one time limit for the lookup and the PUT: an attempt must end well within its lease, or
        # the sweeper would send the next one while this one still runs (a second callback)
        deadline = asyncio.get_running_loop().time() + self._timeout
        try:
            async with asyncio.timeout_at(deadline):
                target = await check_url(url, self._policy, self._resolve)
        except TimeoutError as error:
            raise CallbackUnreachable(
                f"the callback host was not resolved within {self._timeout:g} s"
            ) from error
        except UrlRefused as error:
            raise CallbackRefused(f"the callback URL is refused: {error.reason}") from error
        except FetchError as error:
            raise CallbackUnreachable(str(error)) from error
        sent = {**headers, "Host": target.host_header, "User-Agent": self._policy.user_agent}
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        request = self._client.build_request(
            "PUT", target.pinned_url, content=body, headers=sent, extensions=extensions
        )
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._client.send(request, stream=True)
        except TimeoutError as error:
            raise CallbackUnreachable(f"{target.host} did not answer within {self._timeout:g} s") from error
        except httpx.HTTPError as error:
            raise CallbackUnreachable(f"cannot reach {target.host}: {type(error).__name__}") from error
        try:
            async with asyncio.timeout_at(deadline):
                await _read_at_most(response, self._max_response)
        except (TimeoutError, httpx.HTTPError):
            pass  # the status line came: that is the controller's answer
        finally:
            await response.aclose()
        return response.status_code

    async def close(self) -> None:
        await self._client.aclose()


async def _read_at_most(response: httpx.Response, limit: int) -> int:
    """Read (and drop) the answer's raw bytes, at most about ``limit`` of them (no decompression)."""
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size >= limit:
            break
    return size
