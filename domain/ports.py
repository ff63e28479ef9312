"""The ports the services depend on that need nothing but contracts and the domain: the clock, the
broker publisher, the object store, the reference fetcher, the rate buckets and the lockout's
memory. One place for
each Protocol; the adapters live in ``infra`` (which names them), the fakes in ``tests/unit``.

Errors are the adapters' and are named here only in words: a publisher raises
``infra.publisher.PublishFailed``, a store ``infra.storage.errors.StorageError`` (``ObjectNotFound``,
``StorageUnavailable``), a fetcher ``infra.safe_fetch``'s refusals, a repository
``infra.db.errors.DatabaseError``.

The repositories whose rows are ``infra`` records (sessions, call flows) keep their ports beside
the services that use them (``services/<name>/ports.py``) until the records move to ``domain``.
"""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta
from typing import Protocol

from contracts.envelope import Command, Event
from domain.limits import Limits, LockoutPolicy, RateDecision

__all__ = [
    "Clock",
    "CommandPublisher",
    "FailureHistory",
    "FetchReference",
    "ObjectStore",
    "Publisher",
    "RateBuckets",
    "ReferenceStore",
]


class Clock(Protocol):
    """The time now (timezone-aware, UTC); ``lambda: datetime.now(UTC)`` in production."""

    def __call__(self) -> datetime: ...


class CommandPublisher(Protocol):
    """Publishes a command straight to the broker (``infra.publisher.Publisher``): for what is
    published on its own, not after a state change (those go to the outbox)."""

    async def command(self, command: Command, routing_key: str) -> None:
        """Raises ``PublishFailed``."""
        ...


class Publisher(CommandPublisher, Protocol):
    """Publishes events and commands straight to the broker (``infra.publisher.Publisher``)."""

    async def event(self, event: Event, routing_key: str) -> None:
        """Raises ``PublishFailed``."""
        ...


class ObjectStore(Protocol):
    """Bytes under '/'-separated keys such as ``sessions/<id>/frames/0001.jpg`` (S3 or a local
    directory: ``infra.storage``, which also checks the keys)."""

    async def ensure_buckets(self) -> None:
        """Create what the store needs (bucket, directory). Idempotent."""
        ...

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    async def get(self, key: str) -> bytes:
        """Raises ``ObjectNotFound``."""
        ...

    async def delete(self, key: str) -> None:
        """Deleting a missing key is not an error."""
        ...

    async def list(self, prefix: str) -> builtins.list[str]:
        """Every key under the folder ``prefix`` (``"sessions/<id>/"``, ending in '/'), sorted."""
        ...

    async def presign_get(self, key: str, expires: timedelta) -> str:
        """A URL to read the object without credentials until ``expires`` from now.
        Only S3 gives HTTP URLs; the local store answers a ``file://`` URL."""
        ...

    async def ping(self) -> None:
        """Raises ``StorageUnavailable`` when the store cannot be reached."""
        ...


class ReferenceStore(Protocol):
    """Where a session's reference image is kept (the part of :class:`ObjectStore` session
    creation uses)."""

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    async def delete(self, key: str) -> None: ...


class FetchReference(Protocol):
    """Fetches a reference image URL (``services.intake.sessions.safe_fetcher``: raises
    ``infra.safe_fetch``'s ``UrlRefused``, ``TooLarge``, ``NotAnImage`` or ``FetchFailed``)."""

    async def __call__(self, url: str, /) -> bytes: ...


class RateBuckets(Protocol):
    """Every client's token bucket and monthly count, shared by the replicas
    (``infra.db.security.RateLimitRepository``)."""

    async def take(self, client_key: str, limits: Limits, now: datetime) -> RateDecision:
        """Take one token from ``client_key``'s bucket and count the request against its quota
        (``domain.limits.take_token`` and ``decide``, applied atomically)."""
        ...


class FailureHistory(Protocol):
    """The lockout's memory of failed liveness sessions per subject digest
    (``infra.db.security.LivenessFailures``)."""

    async def locked_until(
        self, subjects: list[str], now: datetime, policy: LockoutPolicy
    ) -> datetime | None:
        """When the last lockout of ``subjects`` in force at ``now`` ends (``policy``'s rule over
        their stored failures), or ``None``."""
        ...
