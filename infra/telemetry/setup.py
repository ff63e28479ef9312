"""One call per process: tracing, and for a worker its /metrics server."""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

from infra.settings import Settings
from infra.telemetry.tracing import setup_tracing

__all__ = ["start_telemetry"]

log = logging.getLogger("faceproof.telemetry")


def start_telemetry(settings: Settings, process: str, *, serve_metrics: bool = True) -> None:
    """Install the tracer provider; a worker (``serve_metrics``) also serves /metrics on
    ``settings.metrics_port`` (0: off) at ``settings.host``. The gateway serves /metrics itself."""
    setup_tracing(settings, process)
    if serve_metrics and settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.host)
        log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
