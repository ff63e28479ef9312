"""The one way the service fetches a URL a caller gave it (reference images, controllers' datastores).

Guards against server-side request forgery:

- only ``http`` and ``https`` (``file:``, ``ftp:``, ``data:`` ... are refused; data URLs are decoded
  elsewhere, never fetched); the call agent's WebSocket rooms are checked by the same rules with
  ``ws`` and ``wss`` (:data:`WEBSOCKET_SCHEMES`);
- the host is resolved once and EVERY address it resolves to is checked: private, loopback,
  link-local (169.254.0.0/16, cloud metadata included), multicast, reserved, unspecified, shared
  (100.64/10), IPv6 unique-local, link-local, v4-mapped / v4-compatible / NAT64 / 6to4 / Teredo
  addresses embedding such an IPv4 are refused, unless the host name or the address is in the
  allow-list (``fetch_allow_hosts``: names, IPs or CIDRs);
- the connection goes to the checked address (no second DNS lookup, so no DNS rebinding): the
  URL's host is replaced by the IP, the ``Host`` header and the TLS SNI / certificate check keep
  the name;
- redirects are followed by hand (at most ``max_redirects``), each target checked again;
- one total time limit, a byte limit enforced while streaming, and (``fetch_image``) the body
  must be a JPEG, PNG or WebP within a pixel limit.

:func:`precheck_url` is the part that needs no DNS (scheme, credentials, a literal address): the
gateway runs it when a call is created, so a refused room fails at once with a 422.

Errors form a small hierarchy (:class:`FetchError`): :class:`UrlRefused` (with a ``reason``),
:class:`FetchFailed`, :class:`TooLarge`, :class:`NotAnImage`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import socket
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
from PIL import Image, UnidentifiedImageError

from infra.settings import Settings

__all__ = [
    "HTTP_SCHEMES",
    "WEBSOCKET_SCHEMES",
    "FetchError",
    "FetchFailed",
    "FetchPolicy",
    "FetchedResource",
    "NotAnImage",
    "Resolver",
    "Target",
    "TooLarge",
    "UrlRefused",
    "check_address",
    "check_host",
    "check_image",
    "check_url",
    "fetch",
    "fetch_image",
    "precheck_url",
    "resolve_host",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

#: Schemes a fetch may use, with their default ports.
HTTP_SCHEMES: Final[Mapping[str, int]] = MappingProxyType({"http": 80, "https": 443})
#: Schemes of the call agent's room sockets (services/call_agent/room/protoo.py).
WEBSOCKET_SCHEMES: Final[Mapping[str, int]] = MappingProxyType({"ws": 80, "wss": 443})
_REDIRECTS: Final = {301, 302, 303, 307, 308}
_IMAGE_FORMATS: Final = {"JPEG", "PNG", "WEBP"}
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL: Final = ipaddress.ip_network("64:ff9b:1::/48")
_SHARED: Final = ipaddress.ip_network("100.64.0.0/10")


class FetchError(Exception):
    """Base of every error of this module."""


class UrlRefused(FetchError):
    """The URL (scheme, host, resolved address, redirect target) may not be fetched."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FetchFailed(FetchError):
    """The server could not be reached, answered an error status, or the time limit passed."""


class TooLarge(FetchError):
    """The body is over the byte limit, or the image over the pixel limit."""


class NotAnImage(FetchError):
    """The body is not a JPEG, PNG or WebP image."""


@dataclass(frozen=True)
class FetchPolicy:
    """Limits of one fetch. ``allow_hosts`` are names (lower case), IPs or CIDRs that may be private."""

    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[IPNetwork, ...] = ()
    timeout_s: float = 10.0
    max_redirects: int = 3
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    user_agent: str = "faceproof-fetch/1"
    extra_headers: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def parse_allow_list(cls, value: str | Iterable[str]) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
        items = value.split(",") if isinstance(value, str) else list(value)
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in items:
            item = raw.strip().lower().strip("[]")
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                name = item.rstrip(".")
                with contextlib.suppress(UrlRefused):  # a name IDNA refuses matches no URL's host
                    name = _ascii_host(name)  # as the hosts it is compared with
                hosts.add(name)
        return frozenset(hosts), tuple(networks)

    @classmethod
    def create(
        cls,
        allow: str | Iterable[str] = "",
        *,
        timeout_s: float = 10.0,
        max_redirects: int = 3,
        max_bytes: int = 10 * 1024 * 1024,
        max_pixels: int = 40_000_000,
    ) -> FetchPolicy:
        hosts, networks = cls.parse_allow_list(allow)
        return cls(
            allow_hosts=hosts,
            allow_networks=networks,
            timeout_s=timeout_s,
            max_redirects=max_redirects,
            max_bytes=max_bytes,
            max_pixels=max_pixels,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchPolicy:
        hosts, networks = cls.parse_allow_list(settings.fetch_allow_hosts)
        return cls(
            allow_hosts=hosts,
            allow_networks=networks,
            timeout_s=settings.fetch_timeout_s,
            max_redirects=settings.fetch_max_redirects,
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
        )

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.allow_hosts

    def address_allowed(self, address: IPAddress) -> bool:
        return str(address) in self.allow_hosts or any(
            address.version == network.version and address in network for network in self.allow_networks
        )

    def refusal(self, address: IPAddress) -> str | None:
        """Why this policy refuses ``address`` (a short reason), or ``None``: public or allowed."""
        reason = check_address(address)
        return None if reason is None or self.address_allowed(address) else reason


@dataclass(frozen=True)
class FetchedResource:
    url: str
    status_code: int
    content_type: str
    body: bytes


def check_address(address: IPAddress) -> str | None:
    """Why ``address`` may not be fetched (a short reason), or ``None`` when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return "IPv4-mapped IPv6 address"
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = check_address(embedded)
            if inner is not None:
                return f"IPv6 address embedding a refused IPv4 address ({inner})"
        if address in _NAT64_LOCAL:
            return "local-use NAT64 address"
        if address.is_site_local:
            return "site-local IPv6 address"
    if address.is_unspecified:
        return "unspecified address"
    if address.is_loopback:
        return "loopback address"
    if address.is_link_local:
        return "link-local address"
    if address.is_multicast:
        return "multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "shared address space (carrier-grade NAT)"
    if address.is_private:
        return "private address"
    if address.is_reserved:
        return "reserved address"
    if not address.is_global:
        return "non-global address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    packed = address.packed
    if packed[:12] == bytes(12) and int(address) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(packed[12:])
    return None


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (A and AAAA), through the system resolver."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise FetchFailed(f"cannot resolve {host!r}") from error
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        text = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 zone id
        address = ipaddress.ip_address(text)
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise FetchFailed(f"{host!r} resolves to no address")
    return addresses


@dataclass(frozen=True)
class Target:
    """A checked URL and the address to connect to (no second DNS lookup)."""

    url: str
    scheme: str
    host: str
    port: int
    pinned: IPAddress
    #: The scheme's default port (80 for http and ws, 443 for https and wss).
    default_port: int = 80

    @property
    def secure(self) -> bool:
        return self.scheme in ("https", "wss")

    @property
    def pinned_url(self) -> str:
        parts = urlsplit(self.url)
        ip = f"[{self.pinned}]" if self.pinned.version == 6 else str(self.pinned)
        netloc = ip if self.port == self.default_port else f"{ip}:{self.port}"
        return urlunsplit((self.scheme, netloc, parts.path or "/", parts.query, ""))

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == self.default_port else f"{host}:{self.port}"


@dataclass(frozen=True)
class _Parsed:
    scheme: str
    host: str
    port: int
    default_port: int
    literal: IPAddress | None


def _check_addresses(host: str, addresses: Iterable[IPAddress], policy: FetchPolicy) -> None:
    if policy.host_allowed(host):
        return
    for address in addresses:
        reason = policy.refusal(address)
        if reason is not None:
            raise UrlRefused(f"{host} resolves to a {reason}")


def _ascii_host(host: str) -> str:
    """The host's ASCII (IDNA) name: what DNS resolves anyway, and what the policy's allow-list,
    the Host header and SNI must see ("localhost" in fullwidth letters is ``localhost``). A name
    IDNA refuses is refused."""
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as error:
        raise UrlRefused("the host is not a valid domain name") from error


def _literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address (an IPv6 zone id dropped), or None for a name."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _parse(url: str, policy: FetchPolicy, schemes: Mapping[str, int]) -> _Parsed:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UrlRefused("malformed URL") from error
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        allowed = " or ".join(schemes)
        raise UrlRefused(f"scheme {scheme or '(none)'!r} is not allowed ({allowed} only)")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("credentials in the URL are not allowed")
    host = _ascii_host((parts.hostname or "").rstrip("."))
    if not host:
        raise UrlRefused("the URL has no host")
    literal = _literal_address(host)
    if literal is not None:
        _check_addresses(host, [literal], policy)
    return _Parsed(scheme, host, port or schemes[scheme], schemes[scheme], literal)


async def check_host(
    host: str, policy: FetchPolicy, resolve: Resolver = resolve_host, *, port: int = 0
) -> None:
    """Check a bare host (a name or a literal address: a room's ICE candidate or TURN server)
    against the policy, every address a name resolves to. Raises :class:`UrlRefused`, or
    :class:`FetchFailed` for a name that does not resolve."""
    host = _ascii_host(host.strip().removeprefix("[").removesuffix("]").rstrip("."))
    if not host:
        raise UrlRefused("no host")
    literal = _literal_address(host)
    _check_addresses(host, [literal] if literal is not None else await resolve(host, port), policy)


def precheck_url(url: str, policy: FetchPolicy, *, schemes: Mapping[str, int] = HTTP_SCHEMES) -> None:
    """The checks that need no DNS: scheme, credentials, a host, a literal address against the
    policy. Raises :class:`UrlRefused`. (:func:`check_url` runs them too, then resolves.)"""
    _parse(url, policy, schemes)


async def check_url(
    url: str, policy: FetchPolicy, resolve: Resolver, *, schemes: Mapping[str, int] = HTTP_SCHEMES
) -> Target:
    """Check a URL against the policy (scheme, credentials, every resolved address) and pin the
    address to connect to. Callers that send other requests than GET (callbacks) and open other
    connections (the call agent's room sockets, ``schemes=WEBSOCKET_SCHEMES``) use it too."""
    parsed = _parse(url, policy, schemes)
    addresses = [parsed.literal] if parsed.literal is not None else await resolve(parsed.host, parsed.port)
    _check_addresses(parsed.host, addresses, policy)
    return Target(
        url=url,
        scheme=parsed.scheme,
        host=parsed.host,
        port=parsed.port,
        pinned=addresses[0],
        default_port=parsed.default_port,
    )


async def fetch(
    url: str,
    *,
    policy: FetchPolicy,
    resolve: Resolver = resolve_host,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FetchedResource:
    """GET ``url`` under ``policy``; raises a :class:`FetchError`."""
    try:
        async with asyncio.timeout(policy.timeout_s):
            return await _fetch(url, policy, resolve, transport)
    except TimeoutError as error:
        raise FetchFailed(f"no complete answer within {policy.timeout_s:g} s") from error


async def _fetch(
    url: str, policy: FetchPolicy, resolve: Resolver, transport: httpx.AsyncBaseTransport | None
) -> FetchedResource:
    timeout = httpx.Timeout(policy.timeout_s)
    async with httpx.AsyncClient(
        transport=transport, timeout=timeout, follow_redirects=False, trust_env=False
    ) as client:
        current = url
        for _hop in range(policy.max_redirects + 1):
            target = await check_url(current, policy, resolve)
            headers = {"Host": target.host_header, "User-Agent": policy.user_agent, "Accept": "*/*"}
            headers.update(dict(policy.extra_headers))
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            request = client.build_request("GET", target.pinned_url, headers=headers, extensions=extensions)
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as error:
                raise FetchFailed(f"cannot fetch from {target.host}: {type(error).__name__}") from error
            try:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchFailed(f"redirect {response.status_code} without a Location")
                    current = urljoin(current, location)
                    continue
                if response.status_code != 200:
                    raise FetchFailed(f"{target.host} answered HTTP {response.status_code}")
                body = await _read_limited(response, policy.max_bytes)
                return FetchedResource(
                    url=current,
                    status_code=response.status_code,
                    content_type=response.headers.get("content-type", ""),
                    body=body,
                )
            finally:
                await response.aclose()
        raise UrlRefused(f"more than {policy.max_redirects} redirects")


async def _read_limited(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge(f"the body is over {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise TooLarge(f"the body is over {max_bytes} bytes")
            chunks.append(chunk)
    except httpx.HTTPError as error:
        raise FetchFailed(f"the transfer broke off: {type(error).__name__}") from error
    return b"".join(chunks)


async def fetch_image(
    url: str,
    *,
    policy: FetchPolicy,
    resolve: Resolver = resolve_host,
    transport: httpx.AsyncBaseTransport | None = None,
) -> bytes:
    """The bytes of the JPEG, PNG or WebP image at ``url``; raises a :class:`FetchError`. The image is
    checked on a worker thread: reading a file of many chunks takes Pillow seconds, which the
    caller's event loop must not wait out."""
    resource = await fetch(url, policy=policy, resolve=resolve, transport=transport)
    await asyncio.to_thread(check_image, resource.body, max_pixels=policy.max_pixels)
    return resource.body


def check_image(data: bytes, *, max_pixels: int) -> str:
    """The format (JPEG, PNG, WEBP) of ``data``; raises :class:`NotAnImage` or :class:`TooLarge`."""
    if not data:
        raise NotAnImage("the body is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt = str(image.format)
                width, height = image.size
                if fmt not in _IMAGE_FORMATS:
                    raise NotAnImage(f"{fmt} is not a JPEG, PNG or WebP image")
                if width * height > max_pixels:
                    raise TooLarge(f"the image has more than {max_pixels} pixels")
                image.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise TooLarge(f"the image has more than {max_pixels} pixels") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise NotAnImage("the body is not a readable image") from error
    return fmt
