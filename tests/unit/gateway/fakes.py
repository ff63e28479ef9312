"""In-memory fakes of the gateway's ports (the call agents, the matcher, the session rows) and a
gateway app over them: the real routes, problem handlers and authenticator, no broker or database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from contracts.commands import CompareFaces, MatchReferences, StartSession
from contracts.documents import SessionSettingsDocument
from contracts.events import FacesCompared, ReferencesMatched, SessionFinished, SessionStarted
from contracts.values import FaceBox, ModelInfo, ScoredFace, SessionStatus, Threshold, ThresholdSource
from domain.records import SessionRecord
from domain.sessions import AuditEntry, SessionEnding
from infra.db.errors import NotFound, VersionConflict
from infra.db.records import ApiClient
from infra.settings import Settings
from infra.storage.errors import StorageError
from services.gateway.auth import Authenticator
from services.gateway.dependencies import Resources
from services.gateway.problems import install_problem_handlers
from services.gateway.ratelimit import RateLimiter, RateLimitHeaders
from services.gateway.routes import calls, compare, erasure, sessions
from services.intake.client_tokens import new_client_token
from tests.unit.intake.fakes import FakeCallCommands, FakeFailures, FakeFlows, FakeSessions, FakeStore

API_KEY = "fp_key-of-client-1"  # a real key's shape: the authenticator looks up fp_ tokens only
STATIC_TOKEN = "static-dev-token"


@dataclass
class FakeApiKeys:
    async def authenticate(self, key: str) -> ApiClient | None:
        if key != API_KEY:
            return None
        now = datetime.now(UTC)
        return ApiClient(
            "client-1", "one", "key-", now, None, rate_per_second=10, burst=10, monthly_quota=100
        )


@dataclass
class FakeSessionRows(FakeSessions):
    """The session rows, with SessionRepository's one-connection rule."""

    released: list[tuple[str, str]] = field(default_factory=list)
    #: What SessionRepository.end writes with each ending: the event (outbox) and the audit entry.
    finished: list[SessionFinished] = field(default_factory=list)
    audits: list[AuditEntry] = field(default_factory=list)
    #: Sessions whose liveness decision is stored (the liveness worker's; they do not expire).
    decisions: set[str] = field(default_factory=set)

    async def fetch(self, session_id: str) -> SessionRecord | None:
        return self.rows.get(session_id)

    async def get(self, owner: str, session_id: str) -> SessionRecord | None:
        row = self.rows.get(session_id)
        return row if row is not None and row.owner == owner else None

    async def claim_connection(
        self, session_id: str, connection_id: str, *, stale_after_s: float
    ) -> SessionRecord | None:
        row, now = self.rows.get(session_id), datetime.now(UTC)
        if row is None or row.status.terminal or row.expires_at <= now:
            return None
        seen = row.connection_seen_at
        if (
            row.connection_id is not None
            and seen is not None
            and seen >= now - timedelta(seconds=stale_after_s)
        ):
            return None
        claimed = replace(
            row, connection_id=connection_id, connection_seen_at=now, connections=row.connections + 1
        )
        self.rows[session_id] = claimed
        return claimed

    async def release_connection(self, session_id: str, connection_id: str) -> bool:
        row = self.rows.get(session_id)
        if row is None or row.connection_id != connection_id:
            return False
        self.rows[session_id] = replace(row, connection_id=None, connection_seen_at=None)
        self.released.append((session_id, connection_id))
        return True

    async def decided(self, session_id: str) -> bool:
        return session_id in self.decisions

    async def end(self, ending: SessionEnding) -> SessionRecord:
        """The version-checked ending (``VersionConflict`` when the row moved on)."""
        row = self.rows.get(ending.session_id)
        if row is None:
            raise NotFound(ending.session_id)
        if row.version != ending.expected_version or row.status.terminal:
            raise VersionConflict(ending.session_id)
        now = datetime.now(UTC)
        ended = replace(
            row,
            status=ending.status,
            result=ending.result if ending.result is not None else row.result,
            finished_at=now,
            updated_at=now,
            version=row.version + 1,
        )
        self.rows[row.id] = ended
        self.finished.append(ending.event)
        self.audits.append(ending.audit)
        return ended

    async def request_erasure(self, session_id: str) -> bool:
        row = self.rows.get(session_id)
        if row is None:
            return False
        if row.erase_requested_at is None:
            self.rows[session_id] = replace(row, erase_requested_at=datetime.now(UTC))
        return True

    def add(
        self,
        *,
        status: SessionStatus = SessionStatus.CREATED,
        language: str = "en",
        expires_in_s: float = 300,
        connections: int = 0,
        owner: str = "client-1",
    ) -> tuple[str, str]:
        """A session (of client-1 unless told) and the client token its browser holds."""
        token, token_hash = new_client_token()
        now = datetime.now(UTC)
        record = SessionRecord(
            id=f"s{len(self.rows) + 1}",
            owner=owner,
            client_request_token=None,
            kind="liveness",
            status=status,
            settings=SessionSettingsDocument(language=language),
            created_at=now,
            updated_at=now,
            expires_at=now + timedelta(seconds=expires_in_s),
            finished_at=now if status.terminal else None,
            result=None,
            version=1,
            client_token_hash=token_hash,
            connections=connections,
        )
        self.rows[record.id] = record
        return record.id, token


@dataclass
class FakePresigningStore(FakeStore):
    """The object store, with presigned read URLs (``missing``: keys it cannot sign)."""

    missing: set[str] = field(default_factory=set)

    async def presign_get(self, key: str, expires: timedelta) -> str:
        if key in self.missing:
            raise StorageError("the store is down")
        return f"https://s3.example/{key}?expires={int(expires.total_seconds())}"


@dataclass
class FakeEraser:
    """Retention.erase: purges a session once (``down``: the store cannot be reached)."""

    purged: list[str] = field(default_factory=list)
    down: bool = False

    async def erase(self, session_id: str, *, actor: str) -> bool:
        if self.down:
            raise StorageError("the store is down")
        if session_id in self.purged:
            return False
        self.purged.append(session_id)
        return True


@dataclass
class FakeCallAgents:
    """Answers each StartSession with ``answer`` (or raises it when it is an exception)."""

    answer: Callable[[StartSession], SessionStarted] | Exception = field(
        default_factory=lambda: (
            lambda command: SessionStarted(
                correlation_id=command.session_id,
                session_id=command.session_id,
                connection_id=command.connection_id,
                answer_sdp="v=0 answer",
            )
        )
    )
    asked: list[tuple[StartSession, float]] = field(default_factory=list)

    async def start_session(self, command: StartSession, *, deadline_s: float) -> SessionStarted:
        self.asked.append((command, deadline_s))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer(command)


MODEL = ModelInfo(pack="permissive", licence="MIT + Apache-2.0", commercial_use=True)
THRESHOLD = Threshold(value=0.6, source=ThresholdSource.DEFAULT, false_match_rate=0.001)
FACE = FaceBox(box=(1.0, 2.0, 30.0, 40.0), score=0.98)


def compared(command: CompareFaces) -> FacesCompared:
    return FacesCompared(
        correlation_id=command.correlation_id,
        client_id=command.client_id,
        request_id=command.message_id,
        model=MODEL,
        similarity=0.83,
        match=True,
        threshold=THRESHOLD,
        source_face=FACE,
        target_faces=[ScoredFace(**FACE.model_dump(), similarity=0.83, match=True)],
    )


@dataclass
class FakeComparisons:
    """The matcher: ``compared`` and ``matched`` answer (or are raised when exceptions)."""

    compared: Callable[[CompareFaces], FacesCompared] | Exception | None = None
    matched: Callable[[MatchReferences], ReferencesMatched] | Exception | None = None
    asked: list[tuple[CompareFaces | MatchReferences, float]] = field(default_factory=list)

    async def compare(self, command: CompareFaces, *, deadline_s: float) -> FacesCompared:
        self.asked.append((command, deadline_s))
        assert self.compared is not None
        if isinstance(self.compared, Exception):
            raise self.compared
        return self.compared(command)

    async def match_references(self, command: MatchReferences, *, deadline_s: float) -> ReferencesMatched:
        self.asked.append((command, deadline_s))
        assert self.matched is not None
        if isinstance(self.matched, Exception):
            raise self.matched
        return self.matched(command)


@dataclass
class Gateway:
    """The session, erasure, call and compare routes over in-memory ports (no request guard: each route admits
    its caller through the ``principal`` dependency, as it does when the guard has not)."""

    settings: Settings = field(default_factory=lambda: Settings(rate_limits=False))
    sessions: FakeSessionRows = field(default_factory=FakeSessionRows)
    store: FakePresigningStore = field(default_factory=FakePresigningStore)
    call_agents: FakeCallAgents = field(default_factory=FakeCallAgents)
    comparisons: FakeComparisons = field(default_factory=FakeComparisons)
    flows: FakeFlows = field(default_factory=FakeFlows)
    call_commands: FakeCallCommands = field(default_factory=FakeCallCommands)
    eraser: FakeEraser = field(default_factory=FakeEraser)
    #: The real RateLimiter over fake buckets (None: no rate limits).
    limiter: RateLimiter | None = None

    def app(self) -> FastAPI:
        app = FastAPI()
        install_problem_handlers(app)
        app.add_middleware(RateLimitHeaders)
        app.include_router(compare.router)
        app.include_router(sessions.router)
        app.include_router(calls.router)
        app.include_router(erasure.router)
        values: dict[str, Any] = {
            "settings": self.settings,
            "database": None,
            "sessions": self.sessions,
            "store": self.store,
            "broker": None,
            "comparisons": self.comparisons,
            "authenticate": Authenticator(FakeApiKeys(), STATIC_TOKEN),
            "call_agents": self.call_agents,
            "flows": self.flows,
            "call_commands": self.call_commands,
            "eraser": self.eraser,
            "failures": FakeFailures(),
            "limiter": self.limiter,
        }
        # Every field Resources requires (None for those these routes never use), and those above.
        app.state.resources = Resources(
            **{
                f.name: values.get(f.name)
                for f in fields(Resources)
                if f.name in values or f.default is MISSING
            }
        )
        return app

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app())
        return httpx.AsyncClient(transport=transport, base_url="http://gateway")
