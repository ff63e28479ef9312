"""Every Prometheus metric of faceproof, defined once on the process's default registry.

Names are ``faceproof_*``; docs/operations.md (Monitoring) lists them and what to alert on, and
deploy/grafana/faceproof.json draws them. Labels are bounded: queue names, route templates, HTTP
status codes, stages and outcomes, never ids.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "CALLBACK_DELIVERIES",
    "ERASED_WRITES",
    "ERASURE_RETRIES",
    "HANDLER_DURATION",
    "HTTP_REQUESTS",
    "HTTP_REQUEST_DURATION",
    "INFERENCE_BATCH_SIZE",
    "INFERENCE_DURATION",
    "MESSAGES_CONSUMED",
    "MESSAGES_DEAD_LETTERED",
    "MESSAGES_FAILED",
    "MESSAGES_PUBLISHED",
    "MESSAGES_PUBLISH_FAILED",
    "METRIC_NAMES",
    "ORPHAN_OBJECTS_REMOVED",
    "REGISTRY",
    "RETENTION_OVERDUE",
    "SESSION_TRANSITIONS",
    "SWEEP_FAILURES",
    "WEBRTC_CONNECTIONS",
    "WEBRTC_FRAMES_RECEIVED",
    "WEBRTC_FRAMES_STORED",
    "WEBRTC_REFUSED",
    "callback_delivery",
    "erased_write",
    "erasure_retry",
    "frame_received",
    "frame_stored",
    "inference",
    "orphan_removed",
    "queue_label",
    "reference_fetch",
    "session_status",
]

#: Seconds: from a 2 ms hop to a 30 s compare deadline.
LATENCY_BUCKETS: Final = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128)

# -- HTTP (the gateway) -----------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "faceproof_http_requests_total",
    "HTTP requests by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "faceproof_http_request_duration_seconds",
    "HTTP request latency by method and route template.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)

# -- broker (every process) -------------------------------------------------------------------
MESSAGES_CONSUMED = Counter(
    "faceproof_messages_consumed_total", "Messages a handler took from a queue.", ["queue"]
)
MESSAGES_FAILED = Counter(
    "faceproof_messages_failed_total",
    "Messages whose handler raised (nacked: redelivered, or dead-lettered at the limit).",
    ["queue", "error"],
)
MESSAGES_DEAD_LETTERED = Counter(
    "faceproof_messages_dead_lettered_total",
    "Messages that failed their last allowed delivery (RabbitMQ moves them to <queue>.dlq).",
    ["queue"],
)
MESSAGES_PUBLISHED = Counter(
    "faceproof_messages_published_total",
    "Messages published, by exchange and routing key (replies: exchange 'default', key 'reply').",
    ["exchange", "routing_key"],
)
MESSAGES_PUBLISH_FAILED = Counter(
    "faceproof_messages_publish_failed_total",
    "Publishes that raised (broker down, no confirm).",
    ["exchange", "routing_key"],
)
HANDLER_DURATION = Histogram(
    "faceproof_handler_duration_seconds",
    "Time a handler spent on one message, by queue.",
    ["queue"],
    buckets=LATENCY_BUCKETS,
)

# -- models (matcher) -------------------------------------------------------------------------
INFERENCE_DURATION = Histogram(
    "faceproof_inference_duration_seconds",
    "Model work per call: detect (decode, detect, align one image) or embed (one batch).",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_BATCH_SIZE = Histogram(
    "faceproof_inference_batch_size",
    "Faces per embedding batch (micro-batching across concurrent messages).",
    ["stage"],
    buckets=BATCH_BUCKETS,
)

# -- sessions, flows, WebRTC ------------------------------------------------------------------
SESSION_TRANSITIONS = Counter(
    "faceproof_session_transitions_total",
    "Liveness sessions entering a status (CREATED, IN_PROGRESS, SUCCEEDED, FAILED, EXPIRED).",
    ["status"],
)
CALLBACK_DELIVERIES = Counter(
    "faceproof_callback_deliveries_total",
    "Controller callback attempts by outcome: delivered, retry (scheduled) or failed (given up).",
    ["outcome"],
)
REFERENCE_FETCHES = Counter(
    "faceproof_reference_fetches_total",
    "Call flows' reference fetches by outcome: sent (to the matcher), unavailable (the flow failed) "
    "or postponed (the client's share of the notifier was in use).",
    ["outcome"],
)
# -- sweepers (infra/sweeps.py) ----------------------------------------------------------------
SWEEP_FAILURES = Counter(
    "faceproof_sweep_failures_total",
    "Periodic sweeps that failed, by sweeper (expiry, retention, housekeeping, flows) and scope: one "
    "item (the others went on) or the whole sweep (retried with backoff).",
    ["sweeper", "scope"],
)
WEBRTC_CONNECTIONS = Gauge(
    "faceproof_webrtc_connections",
    "Open WebRTC connections of this call agent: session (browser) or room (video call).",
    ["kind"],
)
WEBRTC_FRAMES_RECEIVED = Counter(
    "faceproof_webrtc_frames_received_total", "Video frames received from peers.", ["kind"]
)
WEBRTC_FRAMES_STORED = Counter(
    "faceproof_webrtc_frames_stored_total",
    "Sampled frames stored and announced (FrameCaptured).",
    ["kind"],
)
WEBRTC_REFUSED = Counter(
    "faceproof_webrtc_refused_total",
    "Offers (session) and video calls (room) refused because the call agent held "
    "FACEPROOF_MAX_CONCURRENT_CALLS connections (CALL_AGENT_BUSY).",
    ["kind"],
)

# -- erasure (infra/erasure.py, infra/reconcile.py) -------------------------------------------
ERASED_WRITES = Counter(
    "faceproof_erased_writes_total",
    "Writes refused, or undone, because the session's erasure was requested (by writer).",
    ["writer"],
)
ERASURE_RETRIES = Counter(
    "faceproof_erasure_retries_total",
    "Erasures whose purge had not finished, retried by the reconciler: purged or failed (again).",
    ["outcome"],
)
RETENTION_OVERDUE = Gauge(
    "faceproof_retention_overdue_seconds",
    "How long the oldest session still holding biometric data is past its retention period, after "
    "this worker's last purge (0: none; it grows when the purge falls behind or keeps failing).",
)
ORPHAN_OBJECTS_REMOVED = Counter(
    "faceproof_orphan_objects_removed_total",
    "Objects under sessions/ removed by the reconciler: no_row (no session owns them, past the "
    "grace period) or erased (written after the session was purged).",
    ["reason"],
)

#: Every metric family faceproof defines (the dashboard test checks its queries against these).
METRIC_NAMES: Final = frozenset(
    {
        "faceproof_http_requests_total",
        "faceproof_http_request_duration_seconds",
        "faceproof_messages_consumed_total",
        "faceproof_messages_failed_total",
        "faceproof_messages_dead_lettered_total",
        "faceproof_messages_published_total",
        "faceproof_messages_publish_failed_total",
        "faceproof_handler_duration_seconds",
        "faceproof_inference_duration_seconds",
        "faceproof_inference_batch_size",
        "faceproof_session_transitions_total",
        "faceproof_callback_deliveries_total",
        "faceproof_reference_fetches_total",
        "faceproof_sweep_failures_total",
        "faceproof_webrtc_connections",
        "faceproof_webrtc_frames_received_total",
        "faceproof_webrtc_frames_stored_total",
        "faceproof_webrtc_refused_total",
        "faceproof_erased_writes_total",
        "faceproof_erasure_retries_total",
        "faceproof_orphan_objects_removed_total",
        "faceproof_retention_overdue_seconds",
    }
)

_PER_PROCESS_SUFFIX = re.compile(r"\.[0-9a-f]{8,}$")


def queue_label(name: str) -> str:
    """A queue's name as a label: a per-process queue's random suffix dropped (bounded labels)."""
    return _PER_PROCESS_SUFFIX.sub("", name) or "default"


@contextmanager
def inference(stage: str, batch: int | None = None) -> Iterator[None]:
    """Time one model call of ``stage``; ``batch``: the number of items it took."""
    if batch is not None:
        INFERENCE_BATCH_SIZE.labels(stage).observe(batch)
    started = time.perf_counter()
    try:
        yield
    finally:
        INFERENCE_DURATION.labels(stage).observe(time.perf_counter() - started)


def session_status(status: object) -> None:
    """A session entered ``status`` (a SessionStatus or its value)."""
    SESSION_TRANSITIONS.labels(str(getattr(status, "value", status))).inc()


def callback_delivery(outcome: str) -> None:
    CALLBACK_DELIVERIES.labels(outcome).inc()


def reference_fetch(outcome: str) -> None:
    REFERENCE_FETCHES.labels(outcome).inc()


def frame_received(kind: str) -> None:
    WEBRTC_FRAMES_RECEIVED.labels(kind).inc()


def frame_stored(kind: str) -> None:
    WEBRTC_FRAMES_STORED.labels(kind).inc()


def erased_write(writer: str) -> None:
    ERASED_WRITES.labels(writer).inc()


def erasure_retry(outcome: str, count: int = 1) -> None:
    ERASURE_RETRIES.labels(outcome).inc(count)


def orphan_removed(reason: str) -> None:
    ORPHAN_OBJECTS_REMOVED.labels(reason).inc()


def registry() -> CollectorRegistry:
    return REGISTRY
