"""FastStream middlewares for every broker (``infra.broker.create_broker`` installs them).

- :class:`BrokerMetrics`: per queue, messages consumed, failed (by error type) and dead-lettered
  (failed on their last allowed delivery: the quorum queue's ``x-delivery-count`` has reached its
  ``x-delivery-limit``), the handler's latency; per exchange and routing key, messages published
  and publishes that failed. It also binds the message's session, flow and correlation ids to the
  log context while its handler runs.
- FastStream's own ``RabbitTelemetryMiddleware``: a span per publish and per consumed message, with
  the W3C trace context injected into and extracted from the message headers, so a compare or a
  session is one trace across the gateway, the broker and the workers.
"""

from __future__ import annotations

import re
import time
from contextlib import ExitStack
from types import TracebackType
from typing import Any, Final

from faststream import BaseMiddleware
from faststream.exceptions import AckMessage, RejectMessage
from faststream.rabbit.opentelemetry import RabbitTelemetryMiddleware
from faststream.rabbit.response import RabbitPublishCommand

from contracts.routing import PUBLIC_EVENTS_EXCHANGE
from infra.telemetry import context as log_context
from infra.telemetry.metrics import (
    HANDLER_DURATION,
    MESSAGES_CONSUMED,
    MESSAGES_DEAD_LETTERED,
    MESSAGES_FAILED,
    MESSAGES_PUBLISH_FAILED,
    MESSAGES_PUBLISHED,
    queue_label,
)

__all__ = ["BrokerMetrics", "broker_middlewares", "message_ids", "publish_labels"]

#: Ids are looked for in the first bytes of a body only (the envelope's fields come first).
ID_SCAN_BYTES: Final = 1024
_ID = re.compile(rb'"(session_id|flow_id|correlation_id)"\s*:\s*"([0-9A-Za-z_.:-]{1,80})"')


def message_ids(body: bytes) -> dict[str, str]:
    """The session, flow and correlation ids at the start of a JSON message body (first wins)."""
    found: dict[str, str] = {}
    for match in _ID.finditer(body[:ID_SCAN_BYTES]):
        found.setdefault(match.group(1).decode(), match.group(2).decode())
    return found


def publish_labels(cmd: RabbitPublishCommand) -> tuple[str, str]:
    """(exchange, routing key) labels of a publish; a reply (default exchange) is ('default', 'reply');
    a public event's key ``<client id>.<event key>`` is ``*.<event key>`` (labels hold no ids)."""
    exchange = cmd.exchange.name if cmd.exchange is not None else ""
    if not exchange:
        return "default", "reply"
    key = cmd.destination or ""
    if exchange == PUBLIC_EVENTS_EXCHANGE:
        key = "*." + key.partition(".")[2]
    return exchange, key


class BrokerMetrics(BaseMiddleware[RabbitPublishCommand, Any]):
    """One instance per consumed message (and per publish outside a handler)."""

    def __init__(self, msg: Any, /, *, context: Any) -> None:
        super().__init__(msg, context=context)
        self._queue: str | None = None
        self._delivery_limit: int | None = None
        self._started = 0.0
        self._scope = ExitStack()

    async def on_receive(self) -> None:
        subscriber = self.context.get_local("handler_")
        queue = getattr(subscriber, "queue", None)
        self._queue = queue_label(str(getattr(queue, "name", "") or ""))
        limit = (getattr(queue, "arguments", None) or {}).get("x-delivery-limit")
        self._delivery_limit = int(limit) if isinstance(limit, int) else None
        MESSAGES_CONSUMED.labels(self._queue).inc()
        body = getattr(self.msg, "body", b"")
        if isinstance(body, bytes):
            self._scope.enter_context(log_context.bind(**message_ids(body)))
        self._started = time.perf_counter()

    async def after_processed(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool | None:
        if self._queue is None:  # a publish-only instance
            return False
        try:
            HANDLER_DURATION.labels(self._queue).observe(time.perf_counter() - self._started)
            if isinstance(exc_val, Exception) and not isinstance(exc_val, AckMessage):
                error = type(exc_val).__name__
                MESSAGES_FAILED.labels(self._queue, error).inc()
                if self._last_delivery(exc_val):
                    MESSAGES_DEAD_LETTERED.labels(self._queue).inc()
        finally:
            self._scope.close()
        return False

    def _last_delivery(self, error: Exception) -> bool:
        if self._delivery_limit is None:
            return False  # no dead-lettering on this queue (acked or dropped instead)
        if isinstance(error, RejectMessage):
            return True  # rejected: dead-lettered at once
        headers = getattr(self.msg, "headers", None) or {}
        delivered_before = headers.get("x-delivery-count", 0)
        return isinstance(delivered_before, int) and delivered_before >= self._delivery_limit

    async def publish_scope(self, call_next: Any, cmd: RabbitPublishCommand) -> Any:
        exchange, routing_key = publish_labels(cmd)
        try:
            result = await call_next(cmd)
        except Exception:
            MESSAGES_PUBLISH_FAILED.labels(exchange, routing_key).inc()
            raise
        MESSAGES_PUBLISHED.labels(exchange, routing_key).inc()
        return result


def broker_middlewares() -> tuple[Any, ...]:
    """The middlewares of every broker: tracing (outermost), then metrics and log context."""
    return (RabbitTelemetryMiddleware(), BrokerMetrics)
