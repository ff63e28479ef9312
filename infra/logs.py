"""Structured JSON logs on stderr. Never log images, embeddings, tokens or keys.

Whatever a library or a message quotes, the handler's :class:`Redact` filter rewrites each line
before it is written: a URL keeps its scheme and host but not its path, query or credentials
(controllers' tokens travel in callback paths, reference URLs name the controller's files, storage
URLs carry keys), a data URL keeps nothing of its payload, and ``Bearer`` tokens and
``token=``/``secret=``/``password=``/``key=`` values are masked. httpx and httpcore, which log
every request's URL at INFO, log warnings only.
"""

from __future__ import annotations

import json
import logging
import re
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


#: Libraries that log every ICE check, packet or message at INFO; and the HTTP clients, which log
#: every request's URL at INFO (a callback's path holds the controller's token).
NOISY_LIBRARIES = ("aioice", "aiortc", "websockets", "pymediasoup", "httpx", "httpcore")

REDACTED = "[redacted]"
# Linear-time patterns (bounded scheme, no nested repetition): each line is scanned once per pattern.
_URL = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]{0,15})://([^\s/?#\"'<>]*)([^\s\"'<>]*)")
_DATA_URL = re.compile(r"\bdata:[^\s,\"'<>]{0,100},[^\s\"'<>]*", re.IGNORECASE)
_BEARER = re.compile(r"\b(bearer)\s+[^\s\"',;]+", re.IGNORECASE)
_SECRET_VALUE = re.compile(
    r"\b([A-Za-z_\-]{0,32}(?:token|secret|password|passwd|api[_\-]?key|access[_\-]?key))=([^\s&\"',;]+)",
    re.IGNORECASE,
)


def _url(match: re.Match[str]) -> str:
    scheme, authority, rest = match.groups()
    if "@" in authority or "@" in rest:  # credentials (or a malformed URL that may hide them)
        return f"{scheme}://{REDACTED}"
    return f"{scheme}://{authority}{rest}" if rest in ("", "/") else f"{scheme}://{authority}/{REDACTED}"


def redact(text: str) -> str:
    """``text`` without URL paths, queries and credentials, data URL payloads, bearer tokens and
    ``token=``-style values (see the module's docstring)."""
    text = _DATA_URL.sub(f"data:{REDACTED}", text)
    text = _URL.sub(_url, text)
    text = _BEARER.sub(rf"\1 {REDACTED}", text)
    return _SECRET_VALUE.sub(rf"\1={REDACTED}", text)


class Redact(logging.Filter):
    """Rewrites a record's message with :func:`redact` (on the handler: every logger's records)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit the format: the formatter says so
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging(level: str, service: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_ServiceTag(service))
    handler.addFilter(LogContext())  # request/session/flow ids and the trace id of the current work
    handler.addFilter(Redact())  # no URL paths, tokens or credentials, whichever logger wrote it
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for chatty in NOISY_LIBRARIES:  # ICE checks, frame-level chatter, request URLs: warnings only
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))


class _ServiceTag(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self._service
        return True
