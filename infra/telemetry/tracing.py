"""OpenTelemetry tracing: the process's tracer provider, and W3C trace context in AMQP headers.

Every process installs an SDK tracer provider (so trace ids exist and reach the logs even with no
exporter); ``tracing_exporter`` says where finished spans go: ``none``, ``console`` (stdout) or
``otlp`` (needs the ``opentelemetry-exporter-otlp-proto-http`` package; without it the process
refuses to start with a clear error). The trace context travels in each message's headers as
``traceparent``/``tracestate``: FastStream's telemetry middleware injects it on publish and extracts
it on consume; :func:`inject` does the same for the gateway's own request/reply client.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from infra.settings import Settings

__all__ = ["TracingUnavailable", "extract", "inject", "service_name", "setup_tracing", "tracer"]

_PROPAGATOR = TraceContextTextMapPropagator()
OTLP_PACKAGE = "opentelemetry-exporter-otlp-proto-http"


class TracingUnavailable(RuntimeError):
    """The configured exporter cannot be used (its package is not installed, or it is unknown)."""


def service_name(settings: Settings, process: str) -> str:
    return settings.service_name or f"faceproof-{process}"


def _exporter(settings: Settings) -> SpanExporter | None:
    kind = settings.tracing_exporter
    if kind == "none":
        return None
    if kind == "console":
        return ConsoleSpanExporter()
    if kind == "otlp":
        try:
            module = importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
        except ImportError as error:
            raise TracingUnavailable(
                f"FACEPROOF_TRACING_EXPORTER=otlp needs the {OTLP_PACKAGE} package "
                f"(pip install {OTLP_PACKAGE}), or set it to none or console"
            ) from error
        exporter: SpanExporter = module.OTLPSpanExporter(
            **({"endpoint": settings.otlp_endpoint} if settings.otlp_endpoint else {})
        )
        return exporter
    raise TracingUnavailable(f"unknown tracing exporter {kind!r} (none, console or otlp)")


def setup_tracing(
    settings: Settings, process: str, *, processor: SpanProcessor | None = None
) -> TracerProvider:
    """Install this process's tracer provider (once: a second call returns the first provider)."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        if processor is not None:
            current.add_span_processor(processor)
        return current
    exporter = _exporter(settings)  # raises before anything is installed
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name(settings, process)}))
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if processor is not None:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


def tracer() -> trace.Tracer:
    return trace.get_tracer("faceproof")


def inject(headers: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Write the current trace context (``traceparent``) into message or HTTP headers."""
    _PROPAGATOR.inject(headers)
    return headers


def extract(headers: Mapping[str, Any]) -> otel_context.Context:
    """The trace context that ``headers`` carry (an empty context when none)."""
    return _PROPAGATOR.extract({key: str(value) for key, value in headers.items()})
