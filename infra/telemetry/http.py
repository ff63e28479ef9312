"""The gateway's HTTP telemetry: request metrics by route template, a server span, a request id.

:func:`install` adds :class:`HttpTelemetry` (outermost, so 413s and 500s count too). The API port
serves no ``/metrics``: the gateway's metrics are on their own port (``FACEPROOF_METRICS_PORT``,
:mod:`infra.telemetry.setup`), like every worker's, so the public port reveals none of them.
The route label is the matched route's template (``/v1/sessions/{session_id}``), never the raw
path, so no id becomes a label; a request that matched no route is counted as ``unmatched``.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Final
from uuid import uuid4

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from opentelemetry import trace
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.telemetry import context as log_context
from infra.telemetry.metrics import HTTP_REQUEST_DURATION, HTTP_REQUESTS
from infra.telemetry.tracing import extract, tracer

__all__ = ["FASTAPI_TELEMETRY_OFF", "REQUEST_ID_HEADER", "HttpTelemetry", "install", "route_template"]

log = logging.getLogger("faceproof.http")
#: Probes: their access lines only at DEBUG.
QUIET_ROUTES: Final = frozenset({"/healthz", "/readyz"})

REQUEST_ID_HEADER: Final = "X-Request-ID"
#: A caller's request id is kept only if it looks like one (no free text into the logs).
_REQUEST_ID = re.compile(r"^[0-9A-Za-z_.:-]{8,64}$")
UNMATCHED: Final = "unmatched"
#: ``FastAPI(telemetry=...)``: FastAPI's own OpenTelemetry off. It turns itself on as soon as a tracer
#: provider is installed (every process installs one) and adds a second server span around
#: :class:`HttpTelemetry`'s, a span per dependency, endpoint and serialisation, and its own metrics and
#: logs: about 0.3 ms of CPU per request (docs/benchmarks.md, issue 16). HttpTelemetry is the
#: gateway's one HTTP telemetry.
FASTAPI_TELEMETRY_OFF: Final[TelemetryConfig] = {"tracing": False, "metrics": False, "logs": False}


def route_template(scope: Scope) -> str:
    """The template of the route that handled the request, or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if isinstance(path, str) and path:
        return path
    return UNMATCHED


class HttpTelemetry:
    """Pure ASGI middleware (no buffering of bodies)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        given = headers.get(REQUEST_ID_HEADER, "")
        request_id = given if _REQUEST_ID.match(given) else uuid4().hex
        method = str(scope.get("method", "GET"))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        started = time.perf_counter()
        with (
            tracer().start_as_current_span(
                method, context=extract(headers), kind=trace.SpanKind.SERVER
            ) as span,
            log_context.bind(request_id=request_id),
        ):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                route = route_template(scope)
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                span.set_attribute("faceproof.request_id", request_id)
                elapsed = time.perf_counter() - started
                HTTP_REQUESTS.labels(method, route, str(status)).inc()
                HTTP_REQUEST_DURATION.labels(method, route).observe(elapsed)
                # the access line: the route template, never the raw path or query (tokens, ids)
                level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
                log.log(level, "%s %s %d %.0f ms", method, route, status, elapsed * 1000)


def install(app: FastAPI) -> None:
    """Add the middleware (call after the app's other middlewares: outermost)."""
    app.add_middleware(HttpTelemetry)
