"""One call per process: tracing, and its /metrics server (on a port of its own)."""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

from infra.settings import Settings
from infra.telemetry.tracing import setup_tracing

__all__ = ["start_telemetry"]

log = logging.getLogger("faceproof.telemetry")


def start_telemetry(settings: Settings, process: str) -> None:
    """Install the tracer provider and serve /metrics on ``settings.metrics_port`` (0: off) at
    ``settings.host``: every process, the gateway too (its API port serves no /metrics)."""
    setup_tracing(settings, process)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.host)
        log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
