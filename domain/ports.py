"""The ports the services depend on that need nothing but contracts and the domain: the clock, the
broker publisher, the object store, the reference fetcher, the rate buckets, the lockout's memory
and the repositories of sessions and call flows (which return ``domain.records``). One place for
each Protocol; the adapters live in ``infra`` (which names them), the fakes in ``tests/unit``.

Errors are the adapters' and are named here only in words: a publisher raises
``infra.publisher.PublishFailed``, a store ``infra.storage.errors.StorageError`` (``ObjectNotFound``,
``StorageUnavailable``), a fetcher ``infra.safe_fetch``'s refusals, a repository
``infra.db.errors.DatabaseError``.

A service's ports that are its alone stay beside it (``services/<name>/ports.py``: the intake's
``CallCommands``, the notifier's callback sender, reference source and audit trail, the
matcher's face engine and image source).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from contracts.documents import FlowDecision, FlowSettingsDocument, SessionSettingsDocument
from contracts.envelope import Command, Event
from domain.flows import FlowStatus
from domain.limits import Limits, LockoutPolicy, RateDecision
from domain.outgoing import Outgoing
from domain.records import CallFlowRecord, SessionRecord

__all__ = [
    "Clock",
    "CommandPublisher",
    "EventPublisher",
    "FailureHistory",
    "FetchReference",
    "FlowRows",
    "FlowStore",
    "FollowUp",
    "LeasedSessions",
    "ObjectStore",
    "Publisher",
    "RateBuckets",
    "ReferenceStore",
    "SessionLeases",
    "SessionReader",
    "SessionRows",
    "Tombstones",
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


class EventPublisher(Protocol):
    """Publishes an event straight to the broker (``infra.publisher.Publisher``): the call agent's
    frames, challenges' start and a call's failure, which follow no row of its own."""

    async def event(self, event: Event, routing_key: str) -> None:
        """Raises ``PublishFailed``."""
        ...


class Publisher(CommandPublisher, EventPublisher, Protocol):
    """Publishes events and commands straight to the broker (``infra.publisher.Publisher``)."""


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


class SessionReader(Protocol):
    """A session by id, whoever owns it (``infra.db.repositories.SessionRepository``; workers and
    use cases, never a request's lookup: the notifier reads a finished session's result)."""

    async def fetch(self, session_id: str) -> SessionRecord | None: ...


class SessionRows(SessionReader, Protocol):
    """Creating sessions (``infra.db.repositories.SessionRepository``; the intake's use cases)."""

    async def create(
        self,
        owner: str,
        *,
        client_request_token: str | None,
        settings: SessionSettingsDocument,
        expires_at: datetime,
        kind: str = "liveness",
        reference_key: str | None = None,
        client_token_hash: str | None = None,
        session_id: str | None = None,
    ) -> tuple[SessionRecord, bool]:
        """The new session and ``True``, or the owner's session of the same client request token
        and ``False``. Raises ``infra.db.errors.DatabaseError``."""
        ...

    async def set_client_token_hash(self, session_id: str, client_token_hash: str) -> bool: ...


class FlowRows(Protocol):
    """Creating and reading call flows (``infra.db.flows.CallFlowRepository``; the intake's use
    cases and the gateway's GET /v1/calls)."""

    async def create(
        self,
        owner: str,
        *,
        session_id: str,
        ws_url: str,
        callback_base_url: str,
        datastore_base_url: str | None,
        token: str,
        language: str,
        settings: FlowSettingsDocument,
        callback_secret: str | None,
        deadline: datetime,
        flow_id: str | None = None,
    ) -> CallFlowRecord: ...

    async def get(self, owner: str, flow_id: str) -> CallFlowRecord | None: ...

    async def claim_join(self, flow_id: str) -> bool: ...

    async def release_join(self, flow_id: str) -> None: ...


#: The messages that follow a flow's transition, from the record its winner got back (to the outbox).
FollowUp = Callable[[CallFlowRecord], Sequence[Outgoing]]


class FlowStore(Protocol):
    """The call flows (``infra.db.flows.CallFlowRepository``; tests/unit/notifier/fakes.py keeps
    its rules in memory). Each transition is taken once: its one winner gets the record back
    (others None), and ``then``'s messages go to the outbox in the same transaction."""

    async def fetch(self, flow_id: str) -> CallFlowRecord | None: ...

    async def by_session(self, session_id: str) -> CallFlowRecord | None: ...

    async def start_matching(
        self,
        flow_id: str,
        *,
        decision: FlowDecision,
        deadline: datetime,
        fetch_at: datetime,
        then: FollowUp | None = None,
    ) -> CallFlowRecord | None:
        """RUNNING -> MATCHING, fetching its references (sent again by the sweeper at ``fetch_at``)."""
        ...

    async def send_references(
        self,
        flow_id: str,
        *,
        decision: FlowDecision,
        deadline: datetime,
        request_id: str,
        then: FollowUp | None = None,
    ) -> CallFlowRecord | None:
        """A flow still fetching waits for the answer to MatchReferences ``request_id``; else None."""
        ...

    async def postpone_fetch(self, flow_id: str, *, at: datetime) -> CallFlowRecord | None:
        """Put a flow's fetch off until ``at`` (only while it is fetching); else None."""
        ...

    async def conclude(
        self,
        flow_id: str,
        *,
        outcome: str,
        status: FlowStatus,
        decision: FlowDecision,
        first_attempt_at: datetime,
        then: FollowUp | None = None,
    ) -> CallFlowRecord | None: ...

    async def claim_attempt(
        self, flow_id: str, attempt: int, *, lease_until: datetime
    ) -> CallFlowRecord | None: ...

    async def mark_delivered(
        self, flow_id: str, attempt: int, *, status_code: int, then: FollowUp | None = None
    ) -> CallFlowRecord | None: ...

    async def retry_later(
        self, flow_id: str, attempt: int, *, at: datetime, error: str, status_code: int | None
    ) -> CallFlowRecord | None: ...

    async def postpone(self, flow_id: str, attempt: int, *, at: datetime) -> CallFlowRecord | None:
        """Put ``attempt``, not made yet, off until ``at`` (no attempt counted); else None."""
        ...

    async def mark_failed(
        self, flow_id: str, attempt: int, *, error: str, status_code: int | None, then: FollowUp | None = None
    ) -> CallFlowRecord | None: ...

    async def overdue(self, *, now: datetime, limit: int = 100) -> list[CallFlowRecord]: ...

    async def claim_due_deliveries(
        self, *, now: datetime, lease_until: datetime, limit: int = 100
    ) -> list[CallFlowRecord]: ...

    async def claim_due_fetches(
        self, *, now: datetime, lease_until: datetime, limit: int = 100
    ) -> list[CallFlowRecord]: ...


class SessionLeases(SessionReader, Protocol):
    """A live session's connection lease (``infra.db.repositories.SessionRepository``; the call
    agent)."""

    async def touch_connection(self, session_id: str, connection_id: str) -> bool: ...

    async def release_connection(self, session_id: str, connection_id: str) -> bool: ...


class Tombstones(Protocol):
    """Which sessions are erased (``infra.db.repositories.SessionRepository``; the erasure guard of
    ``infra.erasure``)."""

    async def erased(self, session_id: str) -> bool:
        """True when nothing may be stored for the session (erasure requested, purged, missing)."""
        ...


class LeasedSessions(SessionLeases, Tombstones, Protocol):
    """The leases and the erasure tombstones (the call agent: the store it writes frames to checks
    them)."""
