"""An example controller for faceproof's video-call flow (the 2060 Vision Service's side).

It serves the reference images of a folder and prints the callbacks it gets:

    GET  /list/{token}      a JSON array of references: data URLs, http URLs or Data Store ids
    GET  /images/{name}     an image of the folder (what the http URLs point at)
    GET  /r/{id}            an image by id (the Data Store: use it as datastore_base_url)
    PUT  /success/{token}   the flow's success callback (printed)
    PUT  /failure/{token}   the flow's failure callback (printed)

Run it with ``uv run python examples/controller.py --images DIR --port 9000`` (add ``--secret S``
to check the X-Faceproof-Signature of signed callbacks: one that does not verify is answered 401
and not acted on). Only the standard library is used, so the tests import :class:`Controller`
and drive it too. See docs/calls.md (its verification snippet is :func:`verify`, verbatim).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import mimetypes
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
SIGNATURE_HEADER = "X-Faceproof-Signature"
DELIVERY_HEADER = "X-Faceproof-Delivery"  # the same on a callback sent again: act on it once


@dataclass
class Callback:
    outcome: str  # "success" or "failure"
    token: str
    body: bytes
    headers: dict[str, str]
    signature_valid: bool | None  # None: no secret configured here

    @property
    def result(self) -> Any:
        return json.loads(self.body) if self.body else None


def verify(
    secret: str, method: str, path: str, body: bytes, header: str, *, now: float | None = None
) -> bool:
    """Check ``X-Faceproof-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<METHOD>.<path>." + body)>``.

    ``path`` is the request's path as received (percent-encoded, no query): it names the outcome
    and carries the token, so a failure callback replayed to /success (or to another flow) fails.
    Callbacks older than five minutes (or from the future) fail too."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields.get("t", ""))
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - timestamp) > 300:
        return False
    message = f"{timestamp}.{method.upper()}.{path}.".encode() + body
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("v1", ""))


@dataclass
class Controller:
    """The controller's state: its images, what it lists, how it answers callbacks, what it got."""

    images: Path
    host: str = "127.0.0.1"
    port: int = 0
    secret: str | None = None
    #: "data" (data URLs), "url" (http URLs to /images/...) or "id" (Data Store ids for /r/{id})
    list_as: str = "data"
    #: Overrides the list (items as they should appear); None: every image of the folder.
    items: list[Any] | None = None
    #: Status codes to answer the next callbacks with (then 200).
    put_statuses: list[int] = field(default_factory=list)
    callbacks: list[Callback] = field(default_factory=list)
    #: Callbacks refused (401) because their signature did not verify (a secret is set).
    refused: list[Callback] = field(default_factory=list)
    quiet: bool = False
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def files(self) -> list[Path]:
        return sorted(p for p in self.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    def data_url(self, path: Path) -> str:
        kind = mimetypes.guess_type(path.name)[0] or "image/jpeg"
        return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"

    def listing(self) -> list[Any]:
        if self.items is not None:
            return self.items
        if self.list_as == "url":
            return [f"{self.url}/images/{p.name}" for p in self.files()]
        if self.list_as == "id":
            return [p.stem for p in self.files()]
        return [self.data_url(p) for p in self.files()]

    def image(self, name: str) -> Path | None:
        for path in self.files():
            if name in (path.name, path.stem):
                return path
        return None

    def next_status(self) -> int:
        with self._lock:
            return self.put_statuses.pop(0) if self.put_statuses else 200

    def record(self, callback: Callback) -> None:
        delivery = callback.headers.get(DELIVERY_HEADER)
        with self._lock:
            repeat = delivery is not None and any(
                seen.headers.get(DELIVERY_HEADER) == delivery for seen in self.callbacks
            )
            self.callbacks.append(callback)
        if repeat and not self.quiet:
            print(f"callback {callback.outcome.upper()}: a repeat of {delivery}, ignored", flush=True)
        elif not self.quiet:
            result = callback.result
            print(
                f"callback {callback.outcome.upper()}: "
                f"{json.dumps(result) if result is not None else '(empty body)'}"
                + (
                    ""
                    if callback.signature_valid is None
                    else f"; signature valid: {callback.signature_valid}"
                ),
                flush=True,
            )

    def start(self) -> Controller:
        self._server = ThreadingHTTPServer((self.host, self.port), _handler(self))
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True, name="controller").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _handler(controller: Controller) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # no tokens in the console
            return

        def _send(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _file(self, path: Path | None) -> None:
            if path is None:
                self._send(404, b'{"error": "no such image"}')
                return
            self._send(200, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "image/jpeg")

        def do_GET(self) -> None:
            parts = [unquote(p) for p in self.path.split("?", 1)[0].strip("/").split("/")]
            if len(parts) == 2 and parts[0] == "list":
                self._send(200, json.dumps(controller.listing()).encode())
            elif len(parts) == 2 and parts[0] in ("images", "r"):
                self._file(controller.image(parts[1]))
            else:
                self._send(404, b'{"error": "not found"}')

        def do_PUT(self) -> None:
            path = self.path.split("?", 1)[0]
            parts = [unquote(p) for p in path.strip("/").split("/")]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if len(parts) != 2 or parts[0] not in ("success", "failure"):
                self._send(404, b'{"error": "not found"}')
                return
            valid = None
            if controller.secret is not None:
                header = self.headers.get(SIGNATURE_HEADER)
                valid = header is not None and verify(controller.secret, "PUT", path, body, header)
            callback = Callback(parts[0], parts[1], body, dict(self.headers.items()), valid)
            if valid is False:  # never act on a callback whose signature does not verify
                with controller._lock:
                    controller.refused.append(callback)
                if not controller.quiet:
                    print(f"callback {parts[0].upper()} refused: the signature does not verify", flush=True)
                self._send(401, b'{"error": "the signature does not verify"}')
                return
            status = controller.next_status()
            if 200 <= status < 300:
                controller.record(callback)
            self._send(status, b"{}")

    return Handler


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=Path, required=True, help="folder of reference images")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--list-as", choices=("data", "url", "id"), default="data")
    parser.add_argument("--secret", default=None, help="verify signed callbacks with this secret")
    args = parser.parse_args(argv)
    controller = Controller(
        args.images, host=args.host, port=args.port, secret=args.secret, list_as=args.list_as
    ).start()
    print(
        f"controller on {controller.url}: {len(controller.files())} reference image(s); Ctrl-C stops",
        flush=True,
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        controller.stop()


if __name__ == "__main__":
    main()
