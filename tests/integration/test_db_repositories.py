"""Repositories against real PostgreSQL and SQLite (every test runs on both)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.documents import (
    FlowDecision,
    FlowSettingsDocument,
    LivenessDecisionDocument,
    SessionResult,
    SessionSettingsDocument,
)
from contracts.values import ChallengeType
from domain.records import CallFlowRecord
from domain.sessions import Expired, end_session
from infra.db.audit import AuditLog
from infra.db.engine import create_engine, ping, session_factory
from infra.db.errors import AlreadyExists, DatabaseUnavailable, NotFound, VersionConflict
from infra.db.flows import CallFlowRepository
from infra.db.liveness import LivenessRepository
from infra.db.records import SessionStatus
from infra.db.repositories import ApiClientRepository, SessionRepository
from infra.db.tables import CallFlowRow, LivenessFrameRow, LivenessStateRow, SessionRow
from tests.support.services import free_ports


def unique(name: str) -> str:
    """Tests share one database per backend and session, so names and owners never repeat."""
    return f"{name}-{uuid4().hex[:12]}"


@pytest.fixture
def clients(engine: AsyncEngine) -> ApiClientRepository:
    return ApiClientRepository(session_factory(engine))


@pytest.fixture
def sessions(engine: AsyncEngine) -> SessionRepository:
    return SessionRepository(session_factory(engine))


def in_ten_minutes() -> datetime:
    return datetime.now(UTC) + timedelta(minutes=10)


SETTINGS = SessionSettingsDocument(
    challenges=2, challenge_types=[ChallengeType.BLINK, ChallengeType.TURN_LEFT], subject_key="user-1"
)


# --------------------------------------------------------------------------- API clients


async def test_create_and_authenticate(clients: ApiClientRepository) -> None:
    client, key = await clients.create(unique("acme"))
    assert key.startswith("fp_") and len(key) == 3 + 43
    assert client.key_prefix == key[:12]
    assert client.active and client.created_at.tzinfo is not None
    assert (client.rate_per_second, client.burst, client.monthly_quota) == (50.0, 100, 100_000)
    assert await clients.authenticate(key) == client


async def test_custom_limits(clients: ApiClientRepository) -> None:
    client, key = await clients.create(unique("limited"), rate_per_second=2.5, burst=5, monthly_quota=10)
    assert (client.rate_per_second, client.burst, client.monthly_quota) == (2.5, 5, 10)
    assert await clients.authenticate(key) == client


WRONG_KEYS: dict[str, Callable[[str], str]] = {
    "last-char-changed": lambda key: key[:-1] + ("B" if key.endswith("A") else "A"),
    "extra-char": lambda key: key + "x",
    "prefix-only": lambda key: key[:12],
    "empty": lambda key: "",
    "with-scheme": lambda key: "Bearer " + key,
}


@pytest.mark.parametrize("mangle", WRONG_KEYS.values(), ids=WRONG_KEYS.keys())
async def test_wrong_keys_fail(clients: ApiClientRepository, mangle: Callable[[str], str]) -> None:
    _, key = await clients.create(unique("wrong"))
    assert await clients.authenticate(mangle(key)) is None


async def test_revoke_by_name_and_id(clients: ApiClientRepository) -> None:
    by_name, key1 = await clients.create(unique("revoke-name"))
    by_id, key2 = await clients.create(unique("revoke-id"))
    assert await clients.revoke(by_name.name) is True
    assert await clients.revoke(by_id.id) is True
    assert await clients.revoke(by_name.name) is False  # already revoked
    assert await clients.revoke("no-such-client") is False
    assert await clients.authenticate(key1) is None
    assert await clients.authenticate(key2) is None
    listed = {client.id: client for client in await clients.list()}
    assert listed[by_name.id].revoked_at is not None and not listed[by_name.id].active
    assert listed[by_id.id].revoked_at is not None


async def test_list_shows_clients_oldest_first(clients: ApiClientRepository) -> None:
    first, _ = await clients.create(unique("list-a"))
    second, _ = await clients.create(unique("list-b"))
    ids = [client.id for client in await clients.list()]
    assert ids.index(first.id) < ids.index(second.id)


async def test_duplicate_name_is_already_exists(clients: ApiClientRepository) -> None:
    name = unique("dup")
    await clients.create(name)
    with pytest.raises(AlreadyExists):
        await clients.create(name)


async def test_plaintext_key_is_stored_nowhere(clients: ApiClientRepository, engine: AsyncEngine) -> None:
    _, key = await clients.create(unique("secret"))
    async with engine.connect() as connection:
        rows = (await connection.execute(text("SELECT * FROM api_clients"))).all()
    dump = repr(rows)
    assert key not in dump
    assert key[12:] not in dump  # not even the part after the shown prefix


# --------------------------------------------------------------------------- sessions


async def test_rows_written_before_the_typed_documents_are_read(
    sessions: SessionRepository, engine: AsyncEngine
) -> None:
    """Rows exactly as the code before contracts/documents.py wrote them (a call's camelCase
    settings, the camelCase result and liveness decision, the ``items`` of the state) read
    through the documents; what is written back is the one spelling with its version."""
    record, _ = await sessions.create(
        unique("legacy"), client_request_token=None, settings=SETTINGS, expires_at=in_ten_minutes()
    )
    settings = {"challenges": 2, "challengeTypes": ["BLINK", "TURN_LEFT"], "auditImages": 2, "language": "es",
                "expiresInS": 300, "readyTimeoutS": None}  # fmt: skip
    result = {"isLive": True, "confidence": 97.5, "reasons": [], "referenceImageKey": "k/ref.jpg",
              "auditImageKeys": ["k/a0.jpg"], "comparisonResult": 0.91, "comparisonMatch": True,
              "challenges": [{"type": "BLINK", "status": "PASSED", "reason": None}]}  # fmt: skip
    decision = {"isLive": True, "confidence": 97.5, "reasons": [], "referenceKey": "k/ref.jpg",
                "auditKeys": ["k/a0.jpg"], "challenges": result["challenges"]}  # fmt: skip
    factory = session_factory(engine)
    async with factory.begin() as session:
        await session.execute(
            SessionRow.__table__.update()
            .where(SessionRow.id == record.id)
            .values(settings=settings, result=result, status=SessionStatus.SUCCEEDED.value)
        )
        session.add(
            LivenessStateRow(
                session_id=record.id,
                challenges={
                    "items": [{"type": "NOSE_TO_TARGET", "target": [0.25, 0.75]}],
                    "connection": "c1",
                },
                started_at=datetime.now(UTC),
                issued=1,
                verdicts=1,
                decision=decision,
                decided_at=datetime.now(UTC),
                version=1,
            )
        )
    read = await sessions.fetch(record.id)
    assert read is not None and read.result is not None
    assert read.settings.language == "es" and read.settings.challenge_types == [
        ChallengeType.BLINK,
        ChallengeType.TURN_LEFT,
    ]
    assert read.result == SessionResult.from_row(result)
    assert (read.result.reference_image_key, read.result.comparison_match) == ("k/ref.jpg", True)
    state = await LivenessRepository(factory).get(record.id)
    assert state is not None and state.connection_id == "c1"
    assert state.challenges[0].type is ChallengeType.NOSE_TO_TARGET and state.challenges[0].target == (
        0.25,
        0.75,
    )
    assert state.decision == LivenessDecisionDocument.from_row(decision)
    assert state.decision.reference_image_key == "k/ref.jpg"
    async with factory.begin() as session:
        session.add(
            LivenessFrameRow(
                session_id=record.id,
                sequence=0,
                captured_at=datetime.now(UTC),
                storage_key="k/f0.jpg",
                analysis={"width": 640, "height": 480, "face_count": 1, "shown": 0},  # shown mixed in
                spoof_score=0.9,
                embedding={"vector": [0.5, -0.25]},
            )
        )
    [frame] = await LivenessRepository(factory).frames_from(record.id, 0)
    assert frame.analysis == {"width": 640, "height": 480, "face_count": 1} and frame.shown == 0
    assert frame.embedding == [0.5, -0.25]
    # Written back (a new connection rewrites the state document): the one spelling, versioned.
    assert await LivenessRepository(factory).set_connection(record.id, "c2")
    async with engine.connect() as connection:
        stored = (
            await connection.execute(
                select(LivenessStateRow.challenges).where(LivenessStateRow.session_id == record.id)
            )
        ).scalar_one()
    assert stored["version"] == 1 and "items" not in stored and stored["connection"] == "c2"


async def new_flow(sessions: SessionRepository, flows: CallFlowRepository, owner: str) -> CallFlowRecord:
    """A RUNNING call flow of a new session of a new owner."""
    record, _ = await sessions.create(
        unique(owner), client_request_token=None, settings=SETTINGS, expires_at=in_ten_minutes()
    )
    return await flows.create(
        record.owner,
        session_id=record.id,
        ws_url="wss://room.example/r",
        callback_base_url="https://controller.example/cb",
        datastore_base_url=None,
        token="t",
        language="en",
        settings=FlowSettingsDocument(timeout_s=600),
        callback_secret=None,
        deadline=in_ten_minutes(),
    )


async def test_a_flow_row_written_before_the_typed_documents_is_read(
    sessions: SessionRepository, engine: AsyncEngine
) -> None:
    """A call flow's settings and decision as the notifier and intake wrote them (camelCase)."""
    factory = session_factory(engine)
    flows = CallFlowRepository(factory)
    flow = await new_flow(sessions, flows, "legacy")
    settings = {"challenges": 3, "challengeTypes": None, "auditImages": 2, "language": "en",
                "expiresInS": 300, "readyTimeoutS": 20.0, "timeoutS": 900}  # fmt: skip
    decision = {"isLive": True, "confidence": 0.9, "similarity": None, "match": None, "reasons": [],
                "referencesUsed": 2, "referenceErrors": ["reference 1: HTTP 404"]}  # fmt: skip
    async with factory.begin() as session:
        await session.execute(
            CallFlowRow.__table__.update()
            .where(CallFlowRow.id == flow.id)
            .values(settings=settings, decision=decision)
        )
    read = await flows.fetch(flow.id)
    assert read is not None and read.decision is not None
    assert (read.settings.timeout_s, read.settings.ready_timeout_s) == (900, 20.0)
    assert read.decision == FlowDecision.from_row(decision)
    assert (read.decision.references_used, read.decision.reference_errors) == (2, ["reference 1: HTTP 404"])
    assert read.join_sent_at is None  # its JoinCall not published yet
    assert await flows.claim_join(flow.id)
    assert not await flows.claim_join(flow.id)  # one ask, whoever comes second
    joined = await flows.fetch(flow.id)
    assert joined is not None and joined.join_sent_at is not None
    await flows.release_join(flow.id)  # its JoinCall never went out
    assert await flows.claim_join(flow.id)


async def test_a_flow_fetching_its_references_is_put_off_claimed_and_sent_once(
    sessions: SessionRepository, engine: AsyncEngine
) -> None:
    """The fetch's transitions (domain.flows): started once, put off and claimed by the sweeper only
    while fetching, its MatchReferences recorded once; then nothing claims or puts it off."""
    flows = CallFlowRepository(session_factory(engine))
    flow = await new_flow(sessions, flows, "fetch")
    now = datetime.now(UTC)
    live = FlowDecision(is_live=True, confidence=0.9)
    started = await flows.start_matching(flow.id, decision=live, deadline=in_ten_minutes(), fetch_at=now)
    assert started is not None and started.fetching
    again = await flows.start_matching(flow.id, decision=live, deadline=in_ten_minutes(), fetch_at=now)
    assert again is None  # a repeated SessionFinished

    lease = now + timedelta(seconds=30)
    claimed = await flows.claim_due_fetches(now=now + timedelta(seconds=1), lease_until=lease)
    assert flow.id in [due.id for due in claimed]
    assert flow.id not in [due.id for due in await flows.claim_due_fetches(now=now, lease_until=lease)]
    put_off = await flows.postpone_fetch(flow.id, at=now - timedelta(seconds=1))
    assert put_off is not None and put_off.fetching

    sent = await flows.send_references(flow.id, decision=live, deadline=in_ten_minutes(), request_id="r-1")
    assert sent is not None and not sent.fetching and sent.match_request_id == "r-1"
    assert sent.next_attempt_at is None
    assert (
        await flows.send_references(flow.id, decision=live, deadline=in_ten_minutes(), request_id="r-2")
        is None
    )
    assert await flows.postpone_fetch(flow.id, at=now) is None
    due = await flows.claim_due_fetches(now=now + timedelta(seconds=60), lease_until=lease)
    assert flow.id not in [row.id for row in due]


async def test_create_and_get_session(sessions: SessionRepository) -> None:
    owner, expires = unique("owner"), in_ten_minutes()
    record, created = await sessions.create(
        owner, client_request_token=None, settings=SETTINGS, expires_at=expires
    )
    assert created
    assert record.status is SessionStatus.CREATED and record.version == 1 and record.kind == "liveness"
    fetched = await sessions.get(owner, record.id)
    assert fetched == record
    assert fetched.settings == SETTINGS
    assert fetched.expires_at == expires and fetched.expires_at.tzinfo is not None
    assert fetched.result is None and fetched.finished_at is None


async def test_same_token_returns_the_same_session(sessions: SessionRepository) -> None:
    owner = unique("owner")
    first, created1 = await sessions.create(
        owner, client_request_token="tok", settings=SessionSettingsDocument(), expires_at=in_ten_minutes()
    )
    again, created2 = await sessions.create(
        owner, client_request_token="tok", settings=SessionSettingsDocument(), expires_at=in_ten_minutes()
    )
    assert (created1, created2) == (True, False)
    assert again == first


async def test_concurrent_creates_with_one_token_make_one_row(
    sessions: SessionRepository, engine: AsyncEngine
) -> None:
    owner = unique("owner")
    results = await asyncio.gather(
        *(
            sessions.create(
                owner,
                client_request_token="race",
                settings=SessionSettingsDocument(challenges=i),
                expires_at=in_ten_minutes(),
            )
            for i in range(5)
        )
    )
    assert len({record.id for record, _ in results}) == 1
    assert [created for _, created in results].count(True) == 1
    async with engine.connect() as connection:
        count = await connection.scalar(select(func.count()).where(SessionRow.owner == owner))
    assert count == 1


async def test_sessions_are_owner_scoped(sessions: SessionRepository) -> None:
    alice, bob = unique("alice"), unique("bob")
    mine, _ = await sessions.create(
        alice, client_request_token="t", settings=SessionSettingsDocument(), expires_at=in_ten_minutes()
    )
    theirs, created = await sessions.create(
        bob, client_request_token="t", settings=SessionSettingsDocument(), expires_at=in_ten_minutes()
    )
    assert created and theirs.id != mine.id  # tokens are per owner
    assert await sessions.get(bob, mine.id) is None
    assert await sessions.get(alice, mine.id) == mine
    assert await sessions.fetch(mine.id) == mine


async def test_sessions_without_token_are_always_new(sessions: SessionRepository) -> None:
    owner = unique("owner")
    a, _ = await sessions.create(
        owner, client_request_token=None, settings=SessionSettingsDocument(), expires_at=in_ten_minutes()
    )
    b, _ = await sessions.create(
        owner, client_request_token=None, settings=SessionSettingsDocument(), expires_at=in_ten_minutes()
    )
    assert a.id != b.id


async def test_update_status_checks_the_version(sessions: SessionRepository) -> None:
    owner = unique("owner")
    record, _ = await sessions.create(
        owner, client_request_token=None, settings=SessionSettingsDocument(), expires_at=in_ten_minutes()
    )
    running = await sessions.update_status(record.id, expected_version=1, status=SessionStatus.IN_PROGRESS)
    assert running.version == 2 and running.finished_at is None and running.updated_at >= record.updated_at
    with pytest.raises(VersionConflict):
        await sessions.update_status(record.id, expected_version=1, status=SessionStatus.FAILED)
    done = await sessions.update_status(
        record.id,
        expected_version=2,
        status=SessionStatus.SUCCEEDED,
        result=SessionResult(is_live=True, confidence=0.97),
    )
    assert done.status is SessionStatus.SUCCEEDED and done.version == 3
    assert done.finished_at is not None and done.result == SessionResult(is_live=True, confidence=0.97)
    assert await sessions.get(owner, record.id) == done
    with pytest.raises(NotFound):
        await sessions.update_status("missing", expected_version=1, status=SessionStatus.FAILED)


async def test_concurrent_updates_have_one_winner(sessions: SessionRepository) -> None:
    record, _ = await sessions.create(
        unique("owner"),
        client_request_token=None,
        settings=SessionSettingsDocument(),
        expires_at=in_ten_minutes(),
    )
    outcomes = await asyncio.gather(
        *(
            sessions.update_status(record.id, expected_version=1, status=status)
            for status in (SessionStatus.SUCCEEDED, SessionStatus.FAILED, SessionStatus.EXPIRED)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(outcome, BaseException) for outcome in outcomes) == 1
    assert all(
        isinstance(outcome, VersionConflict) for outcome in outcomes if isinstance(outcome, BaseException)
    )


async def test_overdue_lists_only_unfinished_sessions_past_their_time(sessions: SessionRepository) -> None:
    owner, past = unique("owner"), datetime.now(UTC) - timedelta(seconds=1)
    late, _ = await sessions.create(
        owner, client_request_token=None, settings=SessionSettingsDocument(), expires_at=past
    )
    on_time, _ = await sessions.create(
        owner, client_request_token=None, settings=SessionSettingsDocument(), expires_at=in_ten_minutes()
    )
    finished, _ = await sessions.create(
        owner, client_request_token=None, settings=SessionSettingsDocument(), expires_at=past
    )
    await sessions.update_status(finished.id, expected_version=1, status=SessionStatus.SUCCEEDED)
    overdue = await sessions.overdue(limit=10_000)
    assert late.id in overdue and on_time.id not in overdue and finished.id not in overdue


async def test_end_writes_the_ending_and_its_audit_once(
    sessions: SessionRepository, engine: AsyncEngine
) -> None:
    owner, past = unique("owner"), datetime.now(UTC) - timedelta(seconds=1)
    late, _ = await sessions.create(
        owner, client_request_token=None, settings=SessionSettingsDocument(), expires_at=past
    )
    ending = end_session(late, Expired(), datetime.now(UTC))
    assert ending is not None
    ended = await sessions.end(ending)
    assert ended.status is SessionStatus.EXPIRED and ended.version == 2 and ended.finished_at is not None
    with pytest.raises(VersionConflict):
        await sessions.end(ending)  # the version it was decided on is gone: decide again
    records = await AuditLog(session_factory(engine)).list(subject_id=late.id)
    assert [(r.actor, r.action, r.outcome) for r in records] == [(owner, "SESSION_DECIDED", "EXPIRED")]
    with pytest.raises(NotFound):
        await sessions.end(replace(ending, session_id="missing"))


# --------------------------------------------------------------------------- availability


async def test_ping(engine: AsyncEngine) -> None:
    await ping(engine)


async def test_unreachable_postgres_is_database_unavailable() -> None:
    (port,) = free_ports(1)
    dead = create_engine(f"postgresql://postgres@127.0.0.1:{port}/test")
    try:
        with pytest.raises(DatabaseUnavailable):
            await ping(dead)
        with pytest.raises(DatabaseUnavailable):
            await ApiClientRepository(session_factory(dead)).authenticate("fp_" + "x" * 43)
    finally:
        await dead.dispose()
