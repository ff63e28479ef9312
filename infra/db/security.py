"""Security state shared by every replica, persisted: token buckets, monthly usage, client limits,
and failed liveness sessions (the lockout's memory). The rules are ``domain.limits``'s (the bucket,
the quota's month, the lockout window); this module applies their decisions.

The bucket is written with a compare-and-set: ``UPDATE ... WHERE tokens = :old AND updated_at =
:old``, the new values computed by ``domain.limits.take_token`` from the old ones. The old ones are
those this process wrote last, so while this replica is the bucket's only user a request costs that
one statement (and the month's count); when another replica (or the purge) changed the row, the
update matches nothing and the take is retried from the row read under a row lock (``SELECT ...
FOR UPDATE`` on Postgres; inserted full when missing). This process's takes of one bucket go one at
a time. So it is atomic on Postgres and on SQLite alike, and replicas share one bucket. The usage
counter is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE requests < quota RETURNING`` statement,
in the bucket's transaction: it never counts past the quota.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, cast

from sqlalchemy import Float, Table, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from contracts.documents import SessionSettingsDocument
from domain.limits import (
    Limits,
    LockoutPolicy,
    RateDecision,
    decide,
    lockout_subjects,
    month_period,
    take_token,
)
from infra.db.errors import translate_errors
from infra.db.tables import ApiClientRow, LivenessFailureRow, RateBucketRow, UsageRow, UtcDateTime

__all__ = ["ClientUsage", "LivenessFailures", "RateLimitRepository", "failure_rows"]

_CAS_ATTEMPTS = 8
#: Buckets remembered per process (a bucket per API client, per session and the static token's);
#: past this the memory starts afresh (a forgotten bucket costs one locked read).
_KNOWN_BUCKETS = 10_000


@dataclass(frozen=True, slots=True)
class ClientUsage:
    client_key: str
    name: str
    period: str
    requests: int
    limits: Limits
    admin: bool
    revoked: bool


def failure_rows(
    owner: str, settings: SessionSettingsDocument, session_id: str, at: datetime
) -> list[dict[str, Any]]:
    """The ``liveness_failures`` rows of one session whose ending counts toward the lockout
    (``domain.sessions.counts_toward_lockout``; the sessions repository records them in the
    transaction that ends the session, so no path that ends a session can skip it)."""
    return [
        {"owner": owner, "subject": subject, "session_id": session_id, "failed_at": at}
        for subject in lockout_subjects(owner, settings)
    ]


@dataclass(frozen=True, slots=True)
class _Known:
    """A bucket's row as this process last wrote it."""

    tokens: float
    updated_at: datetime


_Taken = tuple[RateDecision, _Known]

_BUCKETS = cast(Table, RateBucketRow.__table__)
_USAGE = cast(Table, UsageRow.__table__)
# The statements of a take, built once (a take binds its values; no statement is built, and no
# cache key computed, per request). Core, not the ORM: nothing here needs the identity map.
_SET_BUCKET: Final = (
    update(_BUCKETS)
    .where(
        _BUCKETS.c.client_key == bindparam("key"),
        _BUCKETS.c.tokens == bindparam("old_tokens"),
        _BUCKETS.c.updated_at == bindparam("old_at"),
    )
    .values(
        tokens=bindparam("new_tokens", type_=Float()), updated_at=bindparam("new_at", type_=UtcDateTime())
    )
)
_LOCK_BUCKET: Final = (
    select(_BUCKETS.c.tokens, _BUCKETS.c.updated_at)
    .where(_BUCKETS.c.client_key == bindparam("key"))
    .with_for_update()
)


@functools.cache
def _upserts(dialect: str) -> tuple[Any, Any]:
    """The dialect's ``INSERT ... ON CONFLICT`` statements of a take: a full bucket unless there
    is one, and one request counted unless the quota is used up (the month's count returned)."""
    insert_: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = bindparam("now", type_=UtcDateTime())
    new_bucket = (
        insert_(_BUCKETS)
        .values(client_key=bindparam("key"), tokens=bindparam("full", type_=Float()), updated_at=now)
        .on_conflict_do_nothing(index_elements=["client_key"])
    )
    count = (
        insert_(_USAGE)
        .values(client_key=bindparam("key"), period=bindparam("period"), requests=1, updated_at=now)
        .on_conflict_do_update(
            index_elements=["client_key", "period"],
            set_={"requests": _USAGE.c.requests + 1, "updated_at": now},
            where=_USAGE.c.requests < bindparam("quota"),
        )
        .returning(_USAGE.c.requests)
    )
    return new_bucket, count


@dataclass(slots=True)
class _KeyLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class RateLimitRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._engine: AsyncEngine = sessions.kw["bind"]
        #: The buckets this process wrote last, by client key (bounded: :data:`_KNOWN_BUCKETS`).
        self._known: dict[str, _Known] = {}
        self._locks: dict[str, _KeyLock] = {}

    async def take(self, client_key: str, limits: Limits, now: datetime) -> RateDecision:
        """Take one token from ``client_key``'s bucket and count one request against its quota."""
        with translate_errors():
            async with self._one_at_a_time(client_key):
                known = self._known.pop(client_key, None)
                taken = None if known is None else await self._take_known(client_key, known, limits, now)
                for _ in range(_CAS_ATTEMPTS):
                    if taken is not None:  # committed
                        decision, self._known[client_key] = taken
                        if len(self._known) > _KNOWN_BUCKETS:
                            self._known.clear()
                        return decision
                    taken = await self._take_read(client_key, limits, now)
        raise RuntimeError(f"rate bucket {client_key} kept changing")

    @asynccontextmanager
    async def _one_at_a_time(self, client_key: str) -> AsyncIterator[None]:
        """This process's takes of one bucket in turn: they would only beat each other's
        compare-and-set (the other replicas' takes are what a compare-and-set can lose to)."""
        entry = self._locks.setdefault(client_key, _KeyLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                del self._locks[client_key]

    async def _take_known(
        self, client_key: str, known: _Known, limits: Limits, now: datetime
    ) -> _Taken | None:
        """The common case, one statement (two with a quota): the compare-and-set from the row
        this process wrote last; ``None`` when the row changed since (another replica, the purge)."""
        async with self._engine.begin() as connection:
            return await self._write(connection, client_key, known, limits, now)

    async def _take_read(self, client_key: str, limits: Limits, now: datetime) -> _Taken | None:
        """The row read under a row lock (``SELECT ... FOR UPDATE`` on Postgres), inserted full when
        missing, then the compare-and-set; ``None`` when it still lost (SQLite, or purged)."""
        new_bucket, _ = _upserts(self._engine.dialect.name)
        async with self._engine.begin() as connection:
            await connection.execute(new_bucket, {"key": client_key, "full": float(limits.burst), "now": now})
            row = (await connection.execute(_LOCK_BUCKET, {"key": client_key})).one_or_none()
            if row is None:  # forgotten (purge_idle) between the two statements: take it again
                return None
            known = _Known(float(row.tokens), row.updated_at)
            return await self._write(connection, client_key, known, limits, now)

    async def _write(
        self, connection: AsyncConnection, client_key: str, known: _Known, limits: Limits, now: datetime
    ) -> _Taken | None:
        """``domain.limits``'s take from ``known``, written if the row is still ``known`` (the
        month's count in the same transaction): the decision and the row as written."""
        bucket = take_token(known.tokens, known.updated_at, limits, now)
        written = await connection.execute(
            _SET_BUCKET,
            {
                "key": client_key,
                "old_tokens": known.tokens,
                "old_at": known.updated_at,
                "new_tokens": bucket.tokens,
                "new_at": bucket.updated_at,
            },
        )
        if written.rowcount != 1:  # changed since: nothing written
            return None
        used = None
        if bucket.allowed and limits.monthly_quota is not None:
            used = await self._count(connection, client_key, limits.monthly_quota, now)
        return decide(bucket, limits, now, quota_used=used), _Known(bucket.tokens, bucket.updated_at)

    @staticmethod
    async def _count(connection: AsyncConnection, client_key: str, quota: int, now: datetime) -> int | None:
        """Count one request this month; ``None`` (nothing counted) when the quota is used up."""
        if quota <= 0:
            return None
        _, count = _upserts(connection.dialect.name)
        values = {"key": client_key, "period": month_period(now), "now": now, "quota": quota}
        used: int | None = (await connection.execute(count, values)).scalar_one_or_none()
        return used

    async def purge_idle(self, now: datetime, *, idle_s: float, limit: int) -> int:
        """Forget up to ``limit`` buckets untouched for ``idle_s``; how many were forgotten. A
        forgotten bucket comes back full, so an API client's bucket is kept while it would not have
        refilled in that time (burst > rate x idle_s); the other buckets (one per session, the
        static token's) refill in less than the smallest idle time allowed (Settings)."""
        before = now - timedelta(seconds=idle_s)
        bucket = aliased(RateBucketRow)
        refilling = select(ApiClientRow.id).where(
            ApiClientRow.id == bucket.client_key,
            ApiClientRow.burst > ApiClientRow.rate_per_second * float(idle_s),
        )
        idle = select(bucket.client_key).where(bucket.updated_at < before, ~refilling.exists()).limit(limit)
        statement = delete(RateBucketRow).where(
            RateBucketRow.client_key.in_(idle), RateBucketRow.updated_at < before
        )
        with translate_errors():
            async with self._sessions.begin() as session:
                result = await session.execute(statement.execution_options(synchronize_session=False))
        return int(getattr(result, "rowcount", 0) or 0)

    async def usage(self, now: datetime, name_or_id: str | None = None) -> list[ClientUsage]:
        """Every API client's (or one's) requests this month beside its limits."""
        period = month_period(now)
        query = (
            select(ApiClientRow, func.coalesce(UsageRow.requests, 0))
            .outerjoin(UsageRow, (UsageRow.client_key == ApiClientRow.id) & (UsageRow.period == period))
            .order_by(ApiClientRow.created_at, ApiClientRow.name)
        )
        if name_or_id is not None:
            query = query.where(or_(ApiClientRow.name == name_or_id, ApiClientRow.id == name_or_id))
        with translate_errors():
            async with self._sessions() as session:
                rows = (await session.execute(query)).all()
        return [
            ClientUsage(
                client_key=client.id,
                name=client.name,
                period=period,
                requests=int(requests),
                limits=Limits(client.rate_per_second, client.burst, client.monthly_quota),
                admin=client.admin,
                revoked=client.revoked_at is not None,
            )
            for client, requests in rows
        ]

    async def requests(self, client_key: str, now: datetime) -> int:
        """Requests counted for ``client_key`` this month (the static token: ``static``)."""
        query = select(UsageRow.requests).where(
            UsageRow.client_key == client_key, UsageRow.period == month_period(now)
        )
        with translate_errors():
            async with self._sessions() as session:
                value = (await session.execute(query)).scalar_one_or_none()
        return int(value or 0)

    async def set_limits(
        self,
        name_or_id: str,
        *,
        rate_per_second: float | None = None,
        burst: int | None = None,
        monthly_quota: int | None = None,
        admin: bool | None = None,
    ) -> bool:
        """Change an API client's limits (only those given); ``False`` when there is no such client."""
        values: dict[str, Any] = {
            key: value
            for key, value in (
                ("rate_per_second", rate_per_second),
                ("burst", burst),
                ("monthly_quota", monthly_quota),
                ("admin", admin),
            )
            if value is not None
        }
        where = or_(ApiClientRow.name == name_or_id, ApiClientRow.id == name_or_id)
        with translate_errors():
            async with self._sessions.begin() as session:
                if not values:
                    found = await session.scalar(select(ApiClientRow.id).where(where))
                    return found is not None
                changed = await session.execute(
                    update(ApiClientRow).where(where).values(**values).returning(ApiClientRow.id)
                )
                return bool(changed.all())


class LivenessFailures:
    """Failed liveness sessions per subject digest: the lockout's memory."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def record(self, owner: str, subjects: list[str], session_id: str, now: datetime) -> None:
        """Count one failure against ``subjects`` (sessions whose ending counts are counted by the
        sessions repository itself; this is for anything else, and for tests)."""
        if not subjects:
            return
        rows = [
            {"owner": owner, "subject": subject, "session_id": session_id, "failed_at": now}
            for subject in subjects
        ]
        with translate_errors():
            async with self._sessions.begin() as session:
                await session.execute(insert(LivenessFailureRow), rows)

    async def locked_until(
        self, subjects: list[str], now: datetime, policy: LockoutPolicy
    ) -> datetime | None:
        """When the lockout of the last locked of ``subjects`` ends (``policy``'s rule over their
        failures since ``policy.since(now)``), or ``None`` when none is locked."""
        if not subjects:
            return None
        query = select(LivenessFailureRow.subject, LivenessFailureRow.failed_at).where(
            LivenessFailureRow.subject.in_(subjects), LivenessFailureRow.failed_at >= policy.since(now)
        )
        with translate_errors():
            async with self._sessions() as session:
                rows = (await session.execute(query)).all()
        return policy.locked_until(((subject, failed_at) for subject, failed_at in rows), now)

    async def purge(self, before: datetime) -> int:
        """Forget failures older than ``before`` (they no longer lock anything)."""
        with translate_errors():
            async with self._sessions.begin() as session:
                result = await session.execute(
                    delete(LivenessFailureRow).where(LivenessFailureRow.failed_at < before)
                )
        return int(result.rowcount)  # type: ignore[attr-defined]
