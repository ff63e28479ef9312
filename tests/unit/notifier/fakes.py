"""In-memory fakes of the notifier's ports (services/notifier/ports.py, handlers.py): the call-flow
rows with CallFlowRepository's once-only transitions, the session results, the broker, the
controller's reference list and its callback URL, and the audit log.

What the handlers send is read in one list, :meth:`Notifier.sent`, whichever way it left: staged
with a flow transition (``then=``, for the outbox) or published directly (the sweeper's resends)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from contracts.documents import (
    CallDecidedDetails,
    FlowDecision,
    FlowSettingsDocument,
    SessionResult,
    SessionSettingsDocument,
)
from contracts.envelope import Command, Message
from contracts.routing import COMMANDS_EXCHANGE
from contracts.values import SessionStatus
from domain.flows import CLAIM_ATTEMPT, START_MATCHING, DeliveryStatus, FlowStatus, ending
from domain.records import CallFlowRecord, SessionRecord
from infra.db.audit import AuditAction
from services.notifier.handlers import Config, Deps
from services.notifier.outcome import RetryPolicy
from services.notifier.ports import (
    CallbackRefused,
    CallbackUnreachable,
    PublishFailed,
    ReferenceImages,
    ReferencesUnavailable,
)
from services.notifier.shares import ClientShares


@dataclass(frozen=True)
class Sent:
    """One message on its way to the broker."""

    exchange: str
    routing_key: str
    payload: dict[str, Any]
    headers: dict[str, Any] | None = None


def _sent(message: Message, exchange: str, key: str, headers: dict[str, Any] | None = None) -> Sent:
    return Sent(exchange, key, message.model_dump(mode="json"), headers)


def flow_record(**values: Any) -> CallFlowRecord:
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "id": "flow-1",
        "owner": "client-1",
        "session_id": "session-1",
        "status": FlowStatus.RUNNING,
        "ws_url": "wss://rooms.example/r/1",
        "callback_base_url": "https://controller.example/cb/",
        "datastore_base_url": None,
        "token": "tok/1",
        "language": "en",
        "settings": FlowSettingsDocument(),
        "callback_secret": None,
        "deadline": now + timedelta(minutes=5),
        "decision": None,
        "outcome": None,
        "delivery": None,
        "attempts": 0,
        "last_error": None,
        "status_code": None,
        "next_attempt_at": None,
        "created_at": now,
        "updated_at": now,
        "finished_at": None,
        "delivered_at": None,
    }
    return CallFlowRecord(**{**fields, **values})


FollowUp = Callable[[CallFlowRecord], Sequence[Any]]


@dataclass
class FakeFlows:
    """CallFlowRepository in memory: each transition is taken once, by the caller whose condition
    still holds; a transition's follow-up messages (``then``) are staged only for that winner."""

    rows: dict[str, CallFlowRecord] = field(default_factory=dict)
    staged: list[Sent] = field(default_factory=list)

    def add(self, **values: Any) -> CallFlowRecord:
        record = flow_record(**values)
        self.rows[record.id] = record
        return record

    async def fetch(self, flow_id: str) -> CallFlowRecord | None:
        return self.rows.get(flow_id)

    async def get(self, owner: str, flow_id: str) -> CallFlowRecord | None:
        row = self.rows.get(flow_id)
        return row if row is not None and row.owner == owner else None

    async def by_session(self, session_id: str) -> CallFlowRecord | None:
        return next((row for row in self.rows.values() if row.session_id == session_id), None)

    def _update(
        self, flow_id: str, allowed: Callable[[CallFlowRecord], bool], then: FollowUp | None, **values: Any
    ) -> CallFlowRecord | None:
        row = self.rows.get(flow_id)
        if row is None or not allowed(row):
            return None
        updated = replace(row, updated_at=datetime.now(UTC), **values)
        self.rows[flow_id] = updated
        for message in then(updated) if then is not None else ():
            self.staged.append(Sent(message.exchange, message.routing_key, message.payload, message.headers))
        return updated

    async def start_matching(
        self,
        flow_id: str,
        *,
        decision: FlowDecision,
        deadline: datetime,
        fetch_at: datetime,
        then: FollowUp | None = None,
    ) -> CallFlowRecord | None:
        return self._update(
            flow_id,
            lambda row: row.outcome is None and START_MATCHING.allows(row.status),
            then,
            status=START_MATCHING.target,
            decision=decision,
            deadline=deadline,
            match_request_id=None,
            next_attempt_at=fetch_at,
        )

    async def send_references(
        self,
        flow_id: str,
        *,
        decision: FlowDecision,
        deadline: datetime,
        request_id: str,
        then: FollowUp | None = None,
    ) -> CallFlowRecord | None:
        return self._update(
            flow_id,
            lambda row: row.fetching,
            then,
            decision=decision,
            deadline=deadline,
            match_request_id=request_id,
            next_attempt_at=None,
        )

    async def postpone_fetch(self, flow_id: str, *, at: datetime) -> CallFlowRecord | None:
        return self._update(flow_id, lambda row: row.fetching, None, next_attempt_at=at)

    async def conclude(
        self,
        flow_id: str,
        *,
        outcome: str,
        status: FlowStatus,
        decision: FlowDecision,
        first_attempt_at: datetime,
        then: FollowUp | None = None,
    ) -> CallFlowRecord | None:
        return self._update(
            flow_id,
            lambda row: row.outcome is None and ending(status).allows(row.status),
            then,
            outcome=outcome,
            status=ending(status).target,
            decision=decision,
            delivery=DeliveryStatus.PENDING,
            attempts=0,
            finished_at=datetime.now(UTC),
            next_attempt_at=first_attempt_at,
        )

    async def claim_attempt(
        self, flow_id: str, attempt: int, *, lease_until: datetime
    ) -> CallFlowRecord | None:
        return self._update(
            flow_id, _attempt(attempt - 1), None, attempts=attempt, next_attempt_at=lease_until
        )

    async def postpone(self, flow_id: str, attempt: int, *, at: datetime) -> CallFlowRecord | None:
        return self._update(flow_id, _attempt(attempt - 1), None, next_attempt_at=at)

    async def mark_delivered(
        self, flow_id: str, attempt: int, *, status_code: int, then: FollowUp | None = None
    ) -> CallFlowRecord | None:
        return self._update(
            flow_id,
            _attempt(attempt),
            then,
            delivery=DeliveryStatus.DELIVERED,
            status_code=status_code,
            last_error=None,
            next_attempt_at=None,
            delivered_at=datetime.now(UTC),
        )

    async def retry_later(
        self, flow_id: str, attempt: int, *, at: datetime, error: str, status_code: int | None
    ) -> CallFlowRecord | None:
        return self._update(
            flow_id, _attempt(attempt), None, next_attempt_at=at, last_error=error, status_code=status_code
        )

    async def mark_failed(
        self, flow_id: str, attempt: int, *, error: str, status_code: int | None, then: FollowUp | None = None
    ) -> CallFlowRecord | None:
        return self._update(
            flow_id,
            _attempt(attempt),
            then,
            delivery=DeliveryStatus.FAILED,
            next_attempt_at=None,
            last_error=error,
            status_code=status_code,
        )

    async def overdue(self, *, now: datetime, limit: int = 100) -> list[CallFlowRecord]:
        rows = [row for row in self.rows.values() if row.outcome is None and row.deadline <= now]
        return sorted(rows, key=lambda row: row.deadline)[:limit]

    async def claim_due_deliveries(
        self, *, now: datetime, lease_until: datetime, limit: int = 100
    ) -> list[CallFlowRecord]:
        return self._claim_due(
            lambda row: row.delivery is DeliveryStatus.PENDING, now=now, lease_until=lease_until, limit=limit
        )

    async def claim_due_fetches(
        self, *, now: datetime, lease_until: datetime, limit: int = 100
    ) -> list[CallFlowRecord]:
        return self._claim_due(lambda row: row.fetching, now=now, lease_until=lease_until, limit=limit)

    def _claim_due(
        self, which: Callable[[CallFlowRecord], bool], *, now: datetime, lease_until: datetime, limit: int
    ) -> list[CallFlowRecord]:
        due = [
            row
            for row in self.rows.values()
            if which(row) and row.next_attempt_at is not None and row.next_attempt_at <= now
        ]
        claimed = [replace(row, next_attempt_at=lease_until) for row in due[:limit]]
        self.rows.update({row.id: row for row in claimed})
        return claimed


def _attempt(attempts: int) -> Callable[[CallFlowRecord], bool]:
    return lambda row: CLAIM_ATTEMPT.allows(row.delivery) and row.attempts == attempts


@dataclass
class FakeSessionResults:
    rows: dict[str, SessionRecord] = field(default_factory=dict)

    async def fetch(self, session_id: str) -> SessionRecord | None:
        return self.rows.get(session_id)

    def add(self, session_id: str, status: SessionStatus, result: dict[str, Any] | None) -> None:
        now = datetime.now(UTC)
        self.rows[session_id] = SessionRecord(
            id=session_id,
            owner="client-1",
            client_request_token=None,
            kind="call",
            status=status,
            settings=SessionSettingsDocument(),
            created_at=now,
            updated_at=now,
            expires_at=now + timedelta(minutes=5),
            finished_at=None if status is SessionStatus.CREATED else now,
            result=None if result is None else SessionResult.from_row(result),
            version=1,
        )


@dataclass
class FakePublisher:
    """The broker, for what the sweeper publishes itself (``down``: PublishFailed)."""

    sent: list[Sent] = field(default_factory=list)
    down: bool = False

    def _take(self, sent: Sent) -> None:
        if self.down:
            raise PublishFailed("the broker is down")
        self.sent.append(sent)

    async def command(self, command: Command, routing_key: str) -> None:
        self._take(_sent(command, COMMANDS_EXCHANGE, routing_key))


@dataclass
class FakeReferences:
    """The controller's reference list: these images, or ReferencesUnavailable(``unavailable``)."""

    images: list[bytes] = field(default_factory=lambda: [b"ref-0", b"ref-1"])
    errors: list[str] = field(default_factory=list)
    unavailable: str | None = None

    async def fetch(self, flow: CallFlowRecord) -> ReferenceImages:
        if self.unavailable is not None:
            raise ReferencesUnavailable(self.unavailable)
        return ReferenceImages(images=self.images, errors=self.errors)


@dataclass(frozen=True)
class Put:
    url: str
    body: bytes
    headers: dict[str, str]


@dataclass
class FakeController:
    """The controller's callback URL: answers each PUT with the next of ``answers`` (a status, or
    an exception raised)."""

    answers: list[int | Exception] = field(default_factory=lambda: [200])
    puts: list[Put] = field(default_factory=list)

    async def put(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        self.puts.append(Put(url, body, headers))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


@dataclass
class FakeAudit:
    records: list[dict[str, Any]] = field(default_factory=list)

    async def record(
        self,
        *,
        actor: str,
        action: AuditAction,
        subject_id: str | None,
        outcome: str | None,
        details: CallDecidedDetails | None = None,
    ) -> None:
        self.records.append(
            {
                "actor": actor,
                "action": action,
                "subject_id": subject_id,
                "outcome": outcome,
                "details": None if details is None else details.to_row(),
            }
        )


UNREACHABLE = CallbackUnreachable("connect timeout")
REFUSED = CallbackRefused("the callback URL is refused: link-local")


@dataclass
class Notifier:
    """The notifier's dependencies, all in memory."""

    flows: FakeFlows = field(default_factory=FakeFlows)
    sessions: FakeSessionResults = field(default_factory=FakeSessionResults)
    publisher: FakePublisher = field(default_factory=FakePublisher)
    references: FakeReferences = field(default_factory=FakeReferences)
    controller: FakeController = field(default_factory=FakeController)
    audit: FakeAudit = field(default_factory=FakeAudit)
    retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(deadline_s=3600, max_attempts=3, backoff_s=1, backoff_max_s=10)
    )
    secret: str | None = None
    shares: ClientShares = field(default_factory=lambda: ClientShares(2))
    fetch_shares: ClientShares = field(default_factory=lambda: ClientShares(2))

    @property
    def deps(self) -> Deps:
        return Deps(
            flows=self.flows,
            sessions=self.sessions,
            publisher=self.publisher,
            references=self.references,
            sender=self.controller,
            config=Config(retry=self.retry, secret=self.secret),
            shares=self.shares,
            fetch_shares=self.fetch_shares,
            rng=random.Random(7),
            audit=self.audit,
        )

    def sent(self, exchange: str | None = None, routing_key: str | None = None) -> list[Sent]:
        """Everything sent (staged with a transition or published), optionally of one destination."""
        return [
            message
            for message in [*self.flows.staged, *self.publisher.sent]
            if exchange in (None, message.exchange) and routing_key in (None, message.routing_key)
        ]
