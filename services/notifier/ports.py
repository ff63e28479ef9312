"""The notifier's ports (small, each with a hand-written fake in the unit tests) and its errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from contracts.envelope import Command
from infra.db.flows import CallFlowRecord
from infra.publisher import PublishFailed

__all__ = [
    "CallbackRefused",
    "CallbackSender",
    "CallbackUnreachable",
    "PublishFailed",
    "Publisher",
    "ReferenceImages",
    "ReferenceSource",
    "ReferencesUnavailable",
]


class ReferencesUnavailable(Exception):
    """The controller's reference list (or every image on it) could not be had."""


class CallbackUnreachable(Exception):
    """The controller could not be reached or timed out (retryable)."""


class CallbackRefused(Exception):
    """The callback URL may not be called (address policy) (permanent)."""


@dataclass(frozen=True)
class ReferenceImages:
    images: list[bytes]
    #: Why some listed references were left out (no URL, no token: only an index and a reason).
    errors: list[str] = field(default_factory=list)


class Publisher(Protocol):
    """What the sweeper publishes itself (a due retry: a leased row, sent again if lost); the
    messages that follow a transition go to the outbox instead. ``infra.publisher.Publisher``."""

    async def command(self, command: Command, routing_key: str) -> None:
        """Raises ``PublishFailed`` (``infra.publisher``'s, re-exported here)."""
        ...


class ReferenceSource(Protocol):
    async def fetch(self, flow: CallFlowRecord) -> ReferenceImages:
        """The controller's reference images; raises ReferencesUnavailable."""
        ...


class CallbackSender(Protocol):
    async def put(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """PUT and return the status code; raises CallbackUnreachable or CallbackRefused."""
        ...
