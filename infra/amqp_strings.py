"""AMQP properties that are not UTF-8 no longer cost the connection (docs/security.md).

RabbitMQ passes a message's short-string properties (``message_id``, ``correlation_id``,
``reply_to``, ``type``, ``app_id``...) and its header names through unchecked, while pamqp decodes
them as strict UTF-8: one message whose ``message_id`` is ``b"\\xff"`` closed the consumer's whole
connection (``InvalidFrameError``) before any handler ran, the broker redelivered it, and every
message in flight on that connection, other clients' commands and the event relays' included, was
counted against its delivery limit with it. An upstream user could crash-loop the ingress that way.

:func:`tolerate_undecodable_strings` makes the process's AMQP decoding total: a property that is not
UTF-8 is decoded with U+FFFD in place of its bad bytes (so a consumer can refuse it, see
:data:`UNDECODABLE`), and a header table with a name that is not UTF-8 is replaced by
``{UNDECODABLE_HEADERS: True}`` (a bad name in a nested table too). Valid messages decode exactly
as before.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from pamqp import common, decode

__all__ = ["UNDECODABLE", "UNDECODABLE_HEADERS", "tolerate_undecodable_strings"]

#: What stands for bytes that were not UTF-8 in a decoded property.
UNDECODABLE: Final = "\ufffd"
#: The one header left of a header table whose names were not all UTF-8.
UNDECODABLE_HEADERS: Final = "x-faceproof-undecodable-headers"

_Decoder = Callable[[bytes], tuple[int, common.FieldValue]]
_strict_short_str: Final = decode.short_str
_strict_table: Final = decode.field_table


def _short_str(value: bytes) -> tuple[int, str]:
    try:
        return _strict_short_str(value)
    except UnicodeDecodeError:
        length = value[0]
        return length + 1, value[1 : length + 1].decode("utf-8", errors="replace")


def _table(value: bytes) -> tuple[int, common.FieldTable]:
    try:
        return _strict_table(value)
    except UnicodeDecodeError:
        (length,) = struct.unpack_from(">I", value)
        return length + 4, {UNDECODABLE_HEADERS: True}


def tolerate_undecodable_strings() -> None:
    """Install the tolerant decoders in this process (idempotent; call before connecting)."""
    methods: dict[str, _Decoder] = decode.METHODS
    methods["shortstr"] = _short_str
    methods["table"] = _table
