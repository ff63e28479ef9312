"""The safe URL fetcher: address checks, and a real local HTTP server behind every refusal."""

from __future__ import annotations

import http.server
import io
import ipaddress
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import pytest
from PIL import Image

from infra.safe_fetch import (
    FetchFailed,
    FetchPolicy,
    IPAddress,
    NotAnImage,
    TooLarge,
    UrlRefused,
    check_address,
    fetch,
    fetch_image,
)
from infra.settings import Settings
from tests.support.hosts import fullwidth


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.1.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "100.64.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:8.8.8.8",
        "2002:7f00:0001::1",  # 6to4 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "64:ff9b::808:808",  # NAT64 (reserved): refused whatever it embeds
    ],
)
def test_refused_addresses(address: str) -> None:
    assert check_address(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"])
def test_public_addresses(address: str) -> None:
    assert check_address(ipaddress.ip_address(address)) is None


def test_allow_list_parses_hosts_ips_and_networks() -> None:
    policy = FetchPolicy.create(" Images.Example.com., 10.0.0.0/8 ,::1, ")
    assert policy.host_allowed("images.example.com")
    assert policy.address_allowed(ipaddress.ip_address("10.9.8.7"))
    assert policy.address_allowed(ipaddress.ip_address("::1"))
    assert not policy.address_allowed(ipaddress.ip_address("127.0.0.1"))


def test_policy_from_settings() -> None:
    settings = Settings(fetch_allow_hosts="a.test", fetch_timeout_s=4, fetch_max_redirects=1)
    policy = FetchPolicy.from_settings(settings)
    assert policy.host_allowed("a.test") and policy.timeout_s == 4 and policy.max_redirects == 1
    assert policy.max_bytes == settings.max_image_bytes


def _resolver(*addresses: str):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in addresses]

    return resolve


async def test_every_resolved_address_is_checked() -> None:
    """A name resolving to a public AND a private address is refused (no DNS-rebinding trick)."""
    with pytest.raises(UrlRefused, match="private"):
        await fetch("http://evil.test/x.jpg", policy=FetchPolicy(), resolve=_resolver("8.8.8.8", "10.0.0.1"))


async def test_metadata_address_refused() -> None:
    with pytest.raises(UrlRefused, match="link-local"):
        await fetch("http://169.254.169.254/latest/meta-data/", policy=FetchPolicy())


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/a.jpg", "data:image/png;base64,AAAA", "gopher://x/"]
)
async def test_schemes_refused(url: str) -> None:
    with pytest.raises(UrlRefused, match="scheme"):
        await fetch(url, policy=FetchPolicy.create("127.0.0.1"))


async def test_credentials_in_url_refused() -> None:
    with pytest.raises(UrlRefused):
        await fetch("http://user:pw@127.0.0.1/", policy=FetchPolicy.create("127.0.0.1"))


# --------------------------------------------------------------------------- a real local server


def _png(width: int = 8, height: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 100, 50)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


class _Handler(http.server.BaseHTTPRequestHandler):
    hosts_seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hosts_seen.append(self.headers.get("Host", ""))
        if self.path == "/image.png":
            self._send(200, PNG, "image/png")
        elif self.path == "/text":
            self._send(200, b"hello, not an image", "text/plain")
        elif self.path == "/big":
            self._send_chunked(200, b"x" * 4096, 64)  # 256 KiB, no Content-Length
        elif self.path.startswith("/redirect-to?"):
            self.send_response(302)
            self.send_header("Location", self.path.split("?", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"no", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_chunked(self, status: int, chunk: bytes, count: int) -> None:
        self.protocol_version = "HTTP/1.1"
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for _ in range(count):
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Server:
    port: int

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


LOCAL = FetchPolicy.create("127.0.0.1", timeout_s=20)


async def test_loopback_refused_by_default(server: Server) -> None:
    with pytest.raises(UrlRefused, match="loopback"):
        await fetch_image(server.url("/image.png"), policy=FetchPolicy())


async def test_localhost_name_refused_by_default(server: Server) -> None:
    with pytest.raises(UrlRefused, match="loopback"):
        await fetch_image(server.url("/image.png", host="localhost"), policy=FetchPolicy())


async def test_allow_listed_ip_is_fetched(server: Server) -> None:
    assert await fetch_image(server.url("/image.png"), policy=LOCAL) == PNG


async def test_allow_listed_name_connects_to_pinned_address_and_keeps_host(server: Server) -> None:
    """The name resolves once (here to 127.0.0.1) and the Host header still names it."""
    policy = FetchPolicy.create("images.test", timeout_s=20)
    _Handler.hosts_seen.clear()
    url = f"http://images.test:{server.port}/image.png"
    assert await fetch_image(url, policy=policy, resolve=_resolver("127.0.0.1")) == PNG
    assert _Handler.hosts_seen == [f"images.test:{server.port}"]


async def test_a_unicode_host_is_fetched_by_its_ascii_name(server: Server) -> None:
    """Fullwidth letters name the same host to DNS; the allow-list, the Host header and SNI see
    its ASCII name (an unencodable Host header was a 500 at the gateway)."""
    allowed_address = FetchPolicy.create("127.0.0.1", timeout_s=20)
    _Handler.hosts_seen.clear()
    url = server.url("/image.png", host=fullwidth("localhost"))
    assert await fetch_image(url, policy=allowed_address) == PNG
    assert _Handler.hosts_seen == [f"localhost:{server.port}"]
    allowed_name = FetchPolicy.create("images.test", timeout_s=20)
    url = f"http://{fullwidth('images.test')}:{server.port}/image.png"
    assert await fetch_image(url, policy=allowed_name, resolve=_resolver("127.0.0.1")) == PNG
    with pytest.raises(UrlRefused, match="loopback"):  # and the same name is refused by default
        await fetch_image(server.url("/image.png", host=fullwidth("localhost")), policy=FetchPolicy())


def test_an_allow_listed_name_in_unicode_matches_its_ascii_spelling() -> None:
    assert FetchPolicy.create("Bücher.example, images.test").host_allowed("xn--bcher-kva.example")


async def test_a_host_idna_refuses_is_refused() -> None:
    with pytest.raises(UrlRefused, match="not a valid domain name"):
        await fetch_image("http://" + "é" * 70 + ".test/image.png", policy=FetchPolicy())


async def test_redirect_to_private_address_refused(server: Server) -> None:
    """The first hop is allowed (allow-listed name), the redirect target is re-checked."""
    policy = FetchPolicy.create("images.test", timeout_s=20)
    url = f"http://images.test:{server.port}/redirect-to?http://127.0.0.1:{server.port}/image.png"
    with pytest.raises(UrlRefused, match="loopback"):
        await fetch_image(url, policy=policy, resolve=_resolver("127.0.0.1"))


async def test_redirect_to_file_refused(server: Server) -> None:
    with pytest.raises(UrlRefused, match="scheme"):
        await fetch_image(server.url("/redirect-to?file:///etc/passwd"), policy=LOCAL)


async def test_allowed_redirect_is_followed(server: Server) -> None:
    assert await fetch_image(server.url("/redirect-to?/image.png"), policy=LOCAL) == PNG


async def test_redirect_limit(server: Server) -> None:
    with pytest.raises(UrlRefused, match="redirects"):
        await fetch_image(server.url("/loop"), policy=LOCAL)


async def test_oversize_body_aborted(server: Server) -> None:
    policy = FetchPolicy.create("127.0.0.1", timeout_s=20, max_bytes=10_000)
    with pytest.raises(TooLarge):
        await fetch(server.url("/big"), policy=policy)


async def test_declared_oversize_refused(server: Server) -> None:
    policy = FetchPolicy.create("127.0.0.1", timeout_s=20, max_bytes=len(PNG) - 1)
    with pytest.raises(TooLarge):
        await fetch_image(server.url("/image.png"), policy=policy)


async def test_too_many_pixels(server: Server) -> None:
    policy = FetchPolicy.create("127.0.0.1", timeout_s=20, max_pixels=10)
    with pytest.raises(TooLarge, match="pixels"):
        await fetch_image(server.url("/image.png"), policy=policy)


async def test_non_image_refused(server: Server) -> None:
    with pytest.raises(NotAnImage):
        await fetch_image(server.url("/text"), policy=LOCAL)


async def test_error_status_is_fetch_failed(server: Server) -> None:
    with pytest.raises(FetchFailed, match="404"):
        await fetch_image(server.url("/missing"), policy=LOCAL)


async def test_unreachable_is_fetch_failed() -> None:
    with pytest.raises(FetchFailed):
        await fetch("http://127.0.0.1:1/x", policy=LOCAL)


async def test_unresolvable_is_fetch_failed() -> None:
    with pytest.raises(FetchFailed, match="resolve"):
        await fetch("http://no-such-host.invalid/x", policy=FetchPolicy())
