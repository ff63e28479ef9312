"""Structured JSON logs on stderr. Never log images, embeddings, tokens or keys."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from infra.telemetry.context import LogContext

#: Extra attributes copied into the JSON line when a log call passes them (``extra={...}``).
CONTEXT_FIELDS = (
    "request_id",
    "session_id",
    "flow_id",
    "correlation_id",
    "client_id",
    "service",
    "trace_id",
    "span_id",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The type and the stack, never the message: it may quote an input.
            line["error"] = record.exc_info[0].__name__
            line["stack"] = "".join(traceback.format_tb(record.exc_info[2]))
        return json.dumps(line, default=str)


#: Libraries that log every ICE check, packet or message at INFO.
NOISY_LIBRARIES = ("aioice", "aiortc", "websockets", "pymediasoup")


def configure_logging(level: str, service: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_ServiceTag(service))
    handler.addFilter(LogContext())  # request/session/flow ids and the trace id of the current work
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for chatty in NOISY_LIBRARIES:  # ICE checks and frame-level chatter: warnings only
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))


class _ServiceTag(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self._service
        return True
