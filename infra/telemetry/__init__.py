"""Telemetry shared by every process: Prometheus metrics, OpenTelemetry tracing, log context.

- :mod:`infra.telemetry.metrics`: the metric objects (one registry per process) and small helpers.
- :mod:`infra.telemetry.tracing`: the tracer provider (exporter by setting) and W3C ``traceparent``
  in AMQP message headers.
- :mod:`infra.telemetry.broker`: the FastStream middlewares every broker gets (``create_broker``).
- :mod:`infra.telemetry.http`: the gateway's request metrics, server span and request id.
- :mod:`infra.telemetry.context`: the ids (request, session, flow, trace) that log lines carry.

Nothing here logs or labels images, embeddings, tokens or keys: labels are queue names, route
templates, status codes, stages and outcomes, never ids or payloads.
"""

from __future__ import annotations

from infra.telemetry.setup import start_telemetry

__all__ = ["start_telemetry"]
