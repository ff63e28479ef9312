"""One fixed answer over HTTP on 127.0.0.1 (the tests' allow-listed address), for a test that
needs a server a URL names: a reference image, a controller's list."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class StaticServer:
    port: int
    #: The Host header of every request it got.
    hosts: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def serving(body: bytes, content_type: str) -> Iterator[StaticServer]:
    """Answer every GET with ``body`` (200, ``content_type``) while the block runs."""
    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hosts.append(self.headers.get("Host", ""))
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield StaticServer(server.server_address[1], hosts)
    finally:
        server.shutdown()
        server.server_close()
