"""infra.lifecycle.SessionLifecycle with an in-memory fake of its port: the ending is written once
(version-checked) together with its one SessionFinished (the repository puts it in the outbox in
the same transaction), and a lost race is decided again."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from contracts.documents import SessionSettingsDocument
from contracts.values import SessionStatus
from domain.records import SessionRecord
from domain.sessions import Decided, Erased, Expired, SessionEnding
from infra.db.errors import VersionConflict
from infra.lifecycle import SessionLifecycle


def _record(**fields: object) -> SessionRecord:
    now = datetime.now(UTC)
    base = SessionRecord(
        id="s1",
        owner="client-a",
        client_request_token=None,
        kind="liveness",
        status=SessionStatus.IN_PROGRESS,
        settings=SessionSettingsDocument(),
        created_at=now,
        updated_at=now,
        expires_at=now - timedelta(seconds=1),
        finished_at=None,
        result=None,
        version=2,
        connections=1,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


class FakeSessions:
    """One stored session; ``end`` checks the version as the SQL update does."""

    def __init__(self, record: SessionRecord, *, moves_before_end: int = 0) -> None:
        self.record = record
        self.endings: list[SessionEnding] = []
        self._moves = moves_before_end

    async def fetch(self, session_id: str) -> SessionRecord | None:
        return self.record if session_id == self.record.id else None

    async def decided(self, session_id: str) -> bool:
        return False

    async def end(self, ending: SessionEnding) -> SessionRecord:
        if self._moves:  # another writer moves the row on between our read and our write
            self._moves -= 1
            self.record = replace(self.record, version=self.record.version + 1)
        if ending.expected_version != self.record.version:
            raise VersionConflict("moved on")
        self.endings.append(ending)
        self.record = replace(
            self.record, status=ending.status, result=ending.result, version=self.record.version + 1
        )
        return self.record


async def test_concurrent_endings_write_once_with_one_session_finished() -> None:
    sessions = FakeSessions(_record())
    lifecycle = SessionLifecycle(sessions)
    results = await asyncio.gather(*(lifecycle.end("s1", Expired()) for _ in range(3)))
    assert sum(result is not None for result in results) == 1
    assert len(sessions.endings) == 1 and sessions.record.status is SessionStatus.EXPIRED
    assert [(e.event.session_id, e.event.status, e.event.reasons) for e in sessions.endings] == [
        ("s1", SessionStatus.EXPIRED, ["EXPIRED"])
    ]


async def test_a_lost_race_is_decided_again_on_what_the_session_now_is() -> None:
    sessions = FakeSessions(_record(), moves_before_end=2)
    ended = await SessionLifecycle(sessions).end("s1", Erased())
    assert ended is not None and ended.status is SessionStatus.FAILED
    assert sessions.endings[0].expected_version == 4  # read again after two conflicts


async def test_a_session_that_keeps_changing_is_given_up_loudly() -> None:
    sessions = FakeSessions(_record(), moves_before_end=99)
    with pytest.raises(VersionConflict):
        await SessionLifecycle(sessions).end("s1", Erased())


async def test_nothing_happens_to_a_finished_or_missing_session() -> None:
    sessions = FakeSessions(_record(status=SessionStatus.SUCCEEDED))
    lifecycle = SessionLifecycle(sessions)
    assert await lifecycle.end("s1", Decided({"isLive": False, "confidence": 0.1})) is None
    assert await lifecycle.end("missing", Expired()) is None
    assert sessions.endings == []
