"""The gateway's app as create_app builds it, without its lifespan: one HTTP telemetry (one server span
per request, FastAPI's own off) and no dependency that FastAPI would run in its thread pool."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence

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
