"""The gateway's app as create_app builds it, without its lifespan: one HTTP telemetry (one server span
per request, FastAPI's own off) and no dependency that FastAPI would run in its thread pool."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from pathlib import Path

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.routing import BaseRoute

from infra.settings import Settings
from infra.telemetry.tracing import setup_tracing
from services.gateway.app import create_app


def test_a_request_makes_one_server_span_and_no_other() -> None:
    exporter = InMemorySpanExporter()
    setup_tracing(Settings(), "tests", processor=SimpleSpanProcessor(exporter))
    try:
        client = TestClient(create_app(Settings()))  # no lifespan: /healthz needs no resources
        response = client.get("/healthz", headers={"X-Request-ID": "caller-request-0002"})
        assert response.status_code == 200
        spans = [span for span in exporter.get_finished_spans() if span.name.endswith("/healthz")]
        others = [span.name for span in exporter.get_finished_spans() if span.name.startswith("fastapi")]
    finally:
        exporter.shutdown()  # the processor stays on the process's provider; it keeps nothing more
    assert [(span.name, span.kind) for span in spans] == [("GET /healthz", SpanKind.SERVER)]
    assert spans[0].attributes is not None
    assert spans[0].attributes["faceproof.request_id"] == "caller-request-0002"
    assert others == []  # FastAPI's per-dependency, endpoint and serialisation spans


def _api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    """Every API route, also those of included routers (FastAPI keeps an included router whole)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _api_routes(included.routes)


def _calls(dependant: Dependant) -> Iterator[object]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def test_no_route_dependency_runs_in_the_thread_pool() -> None:
    """FastAPI runs a plain ``def`` dependency in its thread pool: a hop to a thread and back per
    request. The gateway's are coroutines (the routes' endpoints too)."""
    routes = list(_api_routes(create_app(Settings()).routes))
    assert any(route.path == "/v1/compare" for route in routes)
    sync = {
        f"{route.path}: {getattr(call, '__qualname__', call)}"
        for route in routes
        for call in _calls(route.dependant)
        if not inspect.iscoroutinefunction(call)
    }
    assert sync == set()
    compare = next(route for route in routes if route.path == "/v1/compare")
    assert inspect.iscoroutinefunction(compare.endpoint)


def test_every_answer_is_kept_by_no_cache_and_never_sniffed() -> None:
    """Session reads hold decisions and links to face images (presigned for minutes); the guard's
    refusals and 404s echo a path. None may sit in a cache or be read as HTML (outermost but the
    telemetry: every route's answer, the guard's refusals included)."""
    client = TestClient(create_app(Settings()))  # no lifespan: these two need no resources
    for response in (
        client.get("/healthz"),
        client.get("/v1/<img src=x onerror=alert(1)>"),  # a 404
    ):
        assert response.headers["cache-control"] == "no-store", response.request.url
        assert response.headers["x-content-type-options"] == "nosniff", response.request.url
        assert "strict-transport-security" not in response.headers


def test_a_gateway_serving_tls_itself_asks_for_tls_only(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    settings = Settings(tls_termination="native", tls_cert_file=cert, tls_key_file=key)
    response = TestClient(create_app(settings)).get("/healthz")
    assert response.headers["strict-transport-security"].startswith("max-age=")
