"""Video-call flows (table ``call_flows``): a plain record and the repository.

The state machine is ``domain.flows``'s: each transition here is its conditional ``UPDATE ...
WHERE status IN (<the transition's sources>)``, taken from the domain rule, whose winner alone
gets the row back: the outcome is claimed once (so a flow gets exactly one terminal callback), a
delivery attempt is claimed once per attempt number, and a delivery ends once.

A transition's ``then`` names the messages that follow it (DeliverCallback after the outcome,
FetchReferences when matching starts, MatchReferences once the references are fetched,
CallbackDelivered when a delivery ends): built from the row the winner got back and written to
the outbox in the transition's own transaction (infra/outbox.py), so none is lost when the broker
is down at commit time.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.documents import FlowDecision, FlowSettingsDocument
from domain.flows import (
    CLAIM_ATTEMPT,
    FAIL,
    GIVE_UP,
    MARK_DELIVERED,
    POSTPONE,
    POSTPONE_FETCH,
    RETRY_LATER,
    SEND_REFERENCES,
    START_MATCHING,
    DeliveryStatus,
    FlowStatus,
    Transition,
    ending,
)
from domain.ports import FollowUp
from domain.records import CallFlowRecord
from infra.db.errors import translate_errors
from infra.db.outbox import stage
from infra.db.tables import CallFlowRow, utc_now

__all__ = ["CallFlowRepository"]

_MAX_ERROR = 500


class CallFlowRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

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
        now = utc_now()
        row = CallFlowRow(
            id=flow_id or str(uuid4()),
            owner=owner,
            session_id=session_id,
            status=FlowStatus.RUNNING.value,
            ws_url=ws_url,
            callback_base_url=callback_base_url,
            datastore_base_url=datastore_base_url,
            token=token,
            language=language,
            settings=settings.to_row(),
            callback_secret=callback_secret or None,
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
        with translate_errors():
            async with self._sessions.begin() as session:
                session.add(row)
        return _record(row)

    async def get(self, owner: str, flow_id: str) -> CallFlowRecord | None:
        return await self._one(CallFlowRow.id == flow_id, CallFlowRow.owner == owner)

    async def fetch(self, flow_id: str) -> CallFlowRecord | None:
        return await self._one(CallFlowRow.id == flow_id)

    async def claim_join(self, flow_id: str) -> bool:
        """Take the flow's one ask of a call agent, before its JoinCall is published: True for the
        one caller that took it (a redelivered start then finds it taken and asks no second agent)."""
        with translate_errors():
            async with self._sessions.begin() as session:
                claimed = await session.execute(
                    update(CallFlowRow)
                    .where(CallFlowRow.id == flow_id, CallFlowRow.join_sent_at.is_(None))
                    .values(join_sent_at=utc_now())
                    .execution_options(synchronize_session=False)
                )
        return bool(getattr(claimed, "rowcount", 0))

    async def release_join(self, flow_id: str) -> None:
        """Give the ask back: its JoinCall never reached the broker (a redelivery asks then)."""
        with translate_errors():
            async with self._sessions.begin() as session:
                await session.execute(
                    update(CallFlowRow).where(CallFlowRow.id == flow_id).values(join_sent_at=None)
                )

    async def by_session(self, session_id: str) -> CallFlowRecord | None:
        return await self._one(CallFlowRow.session_id == session_id)

    async def start_matching(
        self,
        flow_id: str,
        *,
        decision: FlowDecision,
        deadline: datetime,
        fetch_at: datetime,
        then: FollowUp | None = None,
    ) -> CallFlowRecord | None:
        """RUNNING -> MATCHING: its references to fetch (the FetchReferences in ``then``; the sweeper
        sends it again at ``fetch_at`` if no fetch ended by then); None once matching or concluded."""
        return await self._update(
            [CallFlowRow.id == flow_id, CallFlowRow.outcome.is_(None), _from(START_MATCHING)],
            then=then,
            status=START_MATCHING.target.value,
            decision=decision.to_row(),
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
        """References fetched: wait for the answer to the MatchReferences ``request_id`` (in ``then``,
        so in the outbox with the transition); None unless the flow was still fetching."""
        return await self._update(
            _fetching(flow_id, SEND_REFERENCES),
            then=then,
            decision=decision.to_row(),
            deadline=deadline,
            match_request_id=request_id,
            next_attempt_at=None,
        )

    async def postpone_fetch(self, flow_id: str, *, at: datetime) -> CallFlowRecord | None:
        return await self._update(_fetching(flow_id, POSTPONE_FETCH), next_attempt_at=at)

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
        """Claim the flow's one outcome (``status``: SUCCEEDED or FAILED, the domain's SUCCEED or
        FAIL); the record only for the caller that claimed it."""
        claim = ending(status)
        now = utc_now()
        return await self._update(
            [CallFlowRow.id == flow_id, CallFlowRow.outcome.is_(None), _from(claim)],
            then=then,
            outcome=outcome,
            status=claim.target.value,
            decision=decision.to_row(),
            delivery=DeliveryStatus.PENDING.value,
            attempts=0,
            finished_at=now,
            next_attempt_at=first_attempt_at,
        )

    async def claim_attempt(
        self, flow_id: str, attempt: int, *, lease_until: datetime
    ) -> CallFlowRecord | None:
        """Make ``attempt`` the delivery attempt in progress (once per number); else None."""
        return await self._update(
            [CallFlowRow.id == flow_id, _from(CLAIM_ATTEMPT), CallFlowRow.attempts == attempt - 1],
            attempts=attempt,
            next_attempt_at=lease_until,
        )

    async def postpone(self, flow_id: str, attempt: int, *, at: datetime) -> CallFlowRecord | None:
        return await self._update(
            [CallFlowRow.id == flow_id, _from(POSTPONE), CallFlowRow.attempts == attempt - 1],
            next_attempt_at=at,
        )

    async def mark_delivered(
        self, flow_id: str, attempt: int, *, status_code: int, then: FollowUp | None = None
    ) -> CallFlowRecord | None:
        return await self._update(
            self._attempt(flow_id, attempt, MARK_DELIVERED),
            then=then,
            delivery=MARK_DELIVERED.target.value,
            status_code=status_code,
            last_error=None,
            next_attempt_at=None,
            delivered_at=utc_now(),
        )

    async def retry_later(
        self, flow_id: str, attempt: int, *, at: datetime, error: str, status_code: int | None
    ) -> CallFlowRecord | None:
        return await self._update(
            self._attempt(flow_id, attempt, RETRY_LATER),
            next_attempt_at=at,
            last_error=error[:_MAX_ERROR],
            status_code=status_code,
        )

    async def mark_failed(
        self,
        flow_id: str,
        attempt: int,
        *,
        error: str,
        status_code: int | None,
        then: FollowUp | None = None,
    ) -> CallFlowRecord | None:
        return await self._update(
            self._attempt(flow_id, attempt, GIVE_UP),
            then=then,
            delivery=GIVE_UP.target.value,
            next_attempt_at=None,
            last_error=error[:_MAX_ERROR],
            status_code=status_code,
        )

    async def overdue(self, *, now: datetime, limit: int = 100) -> builtins.list[CallFlowRecord]:
        """Unconcluded flows past their deadline (the caller fails them; one wins each)."""
        query = (
            select(CallFlowRow)
            .where(CallFlowRow.outcome.is_(None), _from(FAIL), CallFlowRow.deadline <= now)
            .order_by(CallFlowRow.deadline)
            .limit(limit)
        )
        with translate_errors():
            async with self._sessions() as session:
                return [_record(row) for row in await session.scalars(query)]

    async def claim_due_deliveries(
        self, *, now: datetime, lease_until: datetime, limit: int = 100
    ) -> builtins.list[CallFlowRecord]:
        """Pending deliveries whose next attempt is due, each leased to this caller alone."""
        return await self._claim_due(_from(CLAIM_ATTEMPT), now=now, lease_until=lease_until, limit=limit)

    async def claim_due_fetches(
        self, *, now: datetime, lease_until: datetime, limit: int = 100
    ) -> builtins.list[CallFlowRecord]:
        """Flows fetching their references whose fetch is due (put off, or lost), each leased to
        this caller alone."""
        return await self._claim_due(
            *_fetching(None, SEND_REFERENCES), now=now, lease_until=lease_until, limit=limit
        )

    async def _claim_due(
        self, *criteria: Any, now: datetime, lease_until: datetime, limit: int
    ) -> builtins.list[CallFlowRecord]:
        """The rows matching ``criteria`` whose ``next_attempt_at`` is due, moved to ``lease_until``."""
        with translate_errors():
            async with self._sessions.begin() as session:
                ids = list(
                    (
                        await session.scalars(
                            select(CallFlowRow.id)
                            .where(*criteria, CallFlowRow.next_attempt_at <= now)
                            .order_by(CallFlowRow.next_attempt_at)
                            .limit(limit)
                        )
                    ).all()
                )
                if not ids:
                    return []
                rows = (
                    await session.scalars(
                        update(CallFlowRow)
                        .where(CallFlowRow.id.in_(ids), *criteria, CallFlowRow.next_attempt_at <= now)
                        .values(next_attempt_at=lease_until, updated_at=utc_now())
                        .returning(CallFlowRow)
                        .execution_options(synchronize_session=False)
                    )
                ).all()
                return [_record(row) for row in rows]

    @staticmethod
    def _attempt(flow_id: str, attempt: int, transition: Transition[DeliveryStatus]) -> builtins.list[Any]:
        return [CallFlowRow.id == flow_id, _from(transition), CallFlowRow.attempts == attempt]

    async def _update(
        self, criteria: builtins.list[Any], *, then: FollowUp | None = None, **values: Any
    ) -> CallFlowRecord | None:
        """The conditional update; for its winner, ``then``'s messages to the outbox (same
        transaction)."""
        statement = (
            update(CallFlowRow)
            .where(*criteria)
            .values(updated_at=utc_now(), **values)
            .returning(CallFlowRow)
            .execution_options(synchronize_session=False)
        )
        with translate_errors():
            async with self._sessions.begin() as session:
                row = (await session.scalars(statement)).one_or_none()
                record = None if row is None else _record(row)
                if record is not None and then is not None:
                    stage(session, *then(record))
        return record

    async def _one(self, *criteria: Any) -> CallFlowRecord | None:
        with translate_errors():
            async with self._sessions() as session:
                row = (await session.scalars(select(CallFlowRow).where(*criteria))).one_or_none()
        return None if row is None else _record(row)


def _fetching(flow_id: str | None, transition: Transition[FlowStatus]) -> builtins.list[Any]:
    """The ``WHERE`` clause of a transition only a flow fetching its references may take
    (``domain.flows.fetching``): in its sources, no outcome, no MatchReferences sent."""
    criteria = [_from(transition), CallFlowRow.outcome.is_(None), CallFlowRow.match_request_id.is_(None)]
    return criteria if flow_id is None else [CallFlowRow.id == flow_id, *criteria]


def _from(transition: Transition[FlowStatus] | Transition[DeliveryStatus]) -> Any:
    """The ``WHERE`` clause of ``transition``: the row is in one of its sources (domain.flows)."""
    column = CallFlowRow.status if isinstance(transition.target, FlowStatus) else CallFlowRow.delivery
    return column.in_(sorted(source.value for source in transition.sources))


def _record(row: CallFlowRow) -> CallFlowRecord:
    return CallFlowRecord(
        id=row.id,
        owner=row.owner,
        session_id=row.session_id,
        status=FlowStatus(row.status),
        ws_url=row.ws_url,
        callback_base_url=row.callback_base_url,
        datastore_base_url=row.datastore_base_url,
        token=row.token,
        language=row.language,
        settings=FlowSettingsDocument.from_row(row.settings),
        callback_secret=row.callback_secret,
        deadline=row.deadline,
        decision=None if row.decision is None else FlowDecision.from_row(row.decision),
        outcome=row.outcome,
        delivery=None if row.delivery is None else DeliveryStatus(row.delivery),
        attempts=row.attempts,
        last_error=row.last_error,
        status_code=row.status_code,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        delivered_at=row.delivered_at,
        match_request_id=row.match_request_id,
        join_sent_at=row.join_sent_at,
    )
