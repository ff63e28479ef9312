"""In-memory fakes of the intake ports (services/intake/ports.py): no database, store or broker."""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from PIL import Image

from contracts.commands import JoinCall
from contracts.documents import FlowSettingsDocument, SessionSettingsDocument
from contracts.values import SessionStatus
from domain.flows import FlowStatus
from domain.limits import LockoutPolicy
from domain.records import CallFlowRecord, SessionRecord
from infra.db.errors import DatabaseError
from infra.storage.errors import StorageError
from services.intake.errors import Unavailable


def jpeg(width: int = 24, height: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(out, format="JPEG")
    return out.getvalue()


@dataclass
class FakeSessions:
    rows: dict[str, SessionRecord] = field(default_factory=dict)
    #: Raise DatabaseError on create (the database is down).
    down: bool = False

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
        if self.down:
            raise DatabaseError("the database is down")
        for row in self.rows.values():
            if client_request_token is not None and (row.owner, row.client_request_token) == (
                owner,
                client_request_token,
            ):
                return row, False
        now = datetime.now(UTC)
        record = SessionRecord(
            id=session_id or f"s{len(self.rows) + 1}",
            owner=owner,
            client_request_token=client_request_token,
            kind=kind,
            status=SessionStatus.CREATED,
            settings=settings,
            created_at=now,
            updated_at=now,
            expires_at=expires_at,
            finished_at=None,
            result=None,
            version=1,
            reference_key=reference_key,
            client_token_hash=client_token_hash,
        )
        self.rows[record.id] = record
        return record, True

    async def fetch(self, session_id: str) -> SessionRecord | None:
        return self.rows.get(session_id)

    async def set_client_token_hash(self, session_id: str, client_token_hash: str) -> bool:
        self.rows[session_id] = replace(self.rows[session_id], client_token_hash=client_token_hash)
        return True


@dataclass
class FakeStore:
    objects: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    down: bool = False

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if self.down:
            raise StorageError("the store is down")
        self.objects[key] = (data, content_type)

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)


@dataclass
class FakeFailures:
    """The lockout's memory: ``until`` for every subject it is asked about (None: nobody locked)."""

    until: datetime | None = None
    asked: list[list[str]] = field(default_factory=list)

    async def locked_until(
        self, subjects: list[str], now: datetime, policy: LockoutPolicy
    ) -> datetime | None:
        self.asked.append(subjects)
        return self.until


@dataclass
class FakeFlows:
    rows: dict[str, CallFlowRecord] = field(default_factory=dict)

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
    ) -> CallFlowRecord:
        now = datetime.now(UTC)
        record = CallFlowRecord(
            id=flow_id or f"f{len(self.rows) + 1}",
            owner=owner,
            session_id=session_id,
            status=FlowStatus.RUNNING,
            ws_url=ws_url,
            callback_base_url=callback_base_url,
            datastore_base_url=datastore_base_url,
            token=token,
            language=language,
            settings=settings,
            callback_secret=callback_secret,
            deadline=deadline,
            decision=None,
            outcome=None,
            delivery=None,
            attempts=0,
            last_error=None,
            status_code=None,
            next_attempt_at=None,
            created_at=now,
            updated_at=now,
            finished_at=None,
            delivered_at=None,
        )
        self.rows[record.id] = record
        return record

    async def get(self, owner: str, flow_id: str) -> CallFlowRecord | None:
        row = self.rows.get(flow_id)
        return row if row is not None and row.owner == owner else None

    async def claim_join(self, flow_id: str) -> bool:
        if self.rows[flow_id].join_sent_at is not None:
            return False
        self.rows[flow_id] = replace(self.rows[flow_id], join_sent_at=datetime.now(UTC))
        return True

    async def release_join(self, flow_id: str) -> None:
        self.rows[flow_id] = replace(self.rows[flow_id], join_sent_at=None)


@dataclass
class FakeCallCommands:
    sent: list[JoinCall] = field(default_factory=list)
    down: bool = False
    #: Refuse this many publishes first (the broker went away for a moment), then take them.
    fail_first: int = 0

    async def join(self, command: JoinCall) -> None:
        if self.fail_first:
            self.fail_first -= 1
            raise Unavailable("BROKER_UNAVAILABLE", "Service unavailable", "down", retry_after_s=5)
        if self.down:
            raise Unavailable("BROKER_UNAVAILABLE", "Service unavailable", "down", retry_after_s=5)
        self.sent.append(command)
