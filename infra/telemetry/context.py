"""The ids a log line carries without each call passing them: request, session, flow, trace.

The gateway's HTTP middleware sets the request id; the broker middleware sets the session, flow
and correlation ids of the message being handled. :class:`LogContext` (a logging filter, installed
by ``configure_logging``) copies them, and the current trace and span ids, onto each record that
does not carry its own. Ids only: never tokens, keys, images or embeddings.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Final

from opentelemetry import trace

__all__ = ["FIELDS", "LogContext", "bind", "current"]

#: The ids kept in the context (in the order a JSON line shows them).
FIELDS: Final = ("request_id", "session_id", "flow_id", "correlation_id")

_NONE: Final[Mapping[str, str]] = MappingProxyType({})
_ids: ContextVar[Mapping[str, str]] = ContextVar("faceproof_log_ids", default=_NONE)


def current() -> Mapping[str, str]:
    return _ids.get()


@contextmanager
def bind(**ids: str | None) -> Iterator[None]:
    """Add ids (those not None) to the log context of this task for the ``with`` block."""
    merged = {**_ids.get(), **{key: value for key, value in ids.items() if value and key in FIELDS}}
    token = _ids.set(merged)
    try:
        yield
    finally:
        _ids.reset(token)


class LogContext(logging.Filter):
    """Copies the context's ids and the current trace/span id onto every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _ids.get().items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        span = trace.get_current_span().get_span_context()
        if span.is_valid and getattr(record, "trace_id", None) is None:
            record.trace_id = format(span.trace_id, "032x")
            record.span_id = format(span.span_id, "016x")
        return True
