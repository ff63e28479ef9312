"""Starting a video-call flow: one use case for ``POST /v1/calls``, ``POST /join-call`` and the
broker ingress's ``call.join``. It refuses a room the address policy refuses before anything is
stored, creates the call's session and flow rows, then hands JoinCall to a call agent."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from contracts.commands import JoinCall
from contracts.documents import FlowSettingsDocument, SessionSettingsDocument
from contracts.http import CallCreatedResponse, CallSettings, JoinCallRequest
from contracts.languages import choose_language
from contracts.routing import CommandKey
from contracts.values import SessionStatus
from domain.ports import FlowRows, SessionRows
from domain.records import CallFlowRecord, SessionRecord
from infra.db.errors import DatabaseError
from infra.publisher import Publisher, PublishFailed
from infra.safe_fetch import WEBSOCKET_SCHEMES, FetchPolicy, UrlRefused, precheck_url
from infra.settings import Settings
from infra.telemetry.metrics import session_status
from services.intake.caller import Caller
from services.intake.errors import Refused, Unavailable, broker_unavailable
from services.intake.ports import CallCommands

__all__ = ["FLOW_MARGIN_S", "BrokerCallCommands", "CallStarter", "call_created", "check_room_url"]

log = logging.getLogger("faceproof.intake")

#: The flow outlives its session by this much, so the session's own end is what usually ends it.
FLOW_MARGIN_S = 60


def check_room_url(ws_url: str, settings: Settings) -> None:
    """Refuse at once a room the call agent would refuse (the safe fetcher's address policy, the part
    that needs no DNS: a literal private address, credentials): :class:`Refused` ``ROOM_REFUSED``.
    The call agent checks again, with DNS, when it opens the socket."""
    try:
        precheck_url(ws_url, FetchPolicy.from_settings(settings), schemes=WEBSOCKET_SCHEMES)
    except UrlRefused as error:
        detail = f"The room URL (ws_url) is refused: {error.reason}."
        raise Refused("ROOM_REFUSED", "Room refused", detail) from None


class BrokerCallCommands:
    """:class:`~services.intake.ports.CallCommands` through the one publisher (infra/publisher.py).

    JoinCall is published while the request waits, not through the outbox: the caller learns at
    once (503) that no call agent was asked, and the flow row left behind ends at its deadline
    with one failure callback."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    async def join(self, command: JoinCall) -> None:
        try:
            await self._publisher.command(command, CommandKey.JOIN_CALL)
        except PublishFailed:
            raise broker_unavailable() from None


def call_created(flow: CallFlowRecord, requested_language: str) -> CallCreatedResponse:
    """What starting a call answers (``POST /v1/calls``, the broker's ``call.started``)."""
    return CallCreatedResponse(
        flow_id=flow.id,
        session_id=flow.session_id,
        status=flow.status.value,
        language=flow.language,
        requested_language=requested_language,
        language_fallback=choose_language(requested_language)[1],
        deadline=flow.deadline,
    )


def _session_settings(
    call_settings: CallSettings, language: str, session_ttl: int
) -> SessionSettingsDocument:
    return SessionSettingsDocument(
        challenges=call_settings.challenges,
        challenge_types=call_settings.challenge_types,
        audit_images=2,
        language=language,
        expires_in_s=session_ttl,
        ready_timeout_s=call_settings.ready_timeout_s,
    )


def _join_call(
    body: JoinCallRequest,
    caller: Caller,
    flow: CallFlowRecord,
    session: SessionRecord,
    settings: SessionSettingsDocument,
) -> JoinCall:
    """The command for a call agent: the flow's room and language, the session's deadline."""
    return JoinCall(
        correlation_id=flow.id,
        client_id=caller.client_id,
        flow_id=flow.id,
        session_id=session.id,
        ws_url=body.ws_url,
        callback_base_url=body.callback_base_url,
        datastore_base_url=body.datastore_base_url,
        token=body.token,
        language=flow.language,
        expires_at=session.expires_at,
        settings=settings.to_row(),
    )


@dataclass(frozen=True)
class CallStarter:
    settings: Settings
    sessions: SessionRows
    flows: FlowRows
    commands: CallCommands

    async def start(
        self, body: JoinCallRequest, call_settings: CallSettings, caller: Caller
    ) -> CallCreatedResponse:
        """Create the call's session and flow rows, then publish JoinCall for a call agent. When the
        broker is down the flow row stays: its deadline ends it with a failure callback."""
        flow, join = await self._open(body, call_settings, caller, flow_id=None)
        await self._ask_agent(join)
        return call_created(flow, body.lang)

    async def create(
        self, body: JoinCallRequest, call_settings: CallSettings, caller: Caller, *, flow_id: str
    ) -> CallFlowRecord:
        """The rows of :meth:`start` and no call agent asked yet: the broker's ``call.join``
        answers ``call.started`` first, then asks (:meth:`resume`), so that no event of the
        flow (a room that fails at once: ``call.failed``) reaches its client before the answer."""
        flow, _ = await self._open(body, call_settings, caller, flow_id=flow_id)
        return flow

    async def _open(
        self, body: JoinCallRequest, call_settings: CallSettings, caller: Caller, *, flow_id: str | None
    ) -> tuple[CallFlowRecord, JoinCall]:
        check_room_url(body.ws_url, self.settings)
        language, _ = choose_language(body.lang)
        now = datetime.now(UTC)
        session_ttl = call_settings.session_timeout_s or self.settings.session_ttl_s
        flow_ttl = max(call_settings.timeout_s or self.settings.flow_timeout_s, session_ttl + FLOW_MARGIN_S)
        session_settings = _session_settings(call_settings, language, session_ttl)
        session, _ = await self.sessions.create(
            caller.owner,
            client_request_token=None,
            settings=session_settings,
            expires_at=now + timedelta(seconds=session_ttl),
            kind="call",
        )
        session_status(SessionStatus.CREATED)
        flow = await self.flows.create(
            caller.owner,
            session_id=session.id,
            ws_url=body.ws_url,
            callback_base_url=str(body.callback_base_url),
            datastore_base_url=None if body.datastore_base_url is None else str(body.datastore_base_url),
            token=body.token,
            language=language,
            settings=FlowSettingsDocument(
                **session_settings.model_dump(exclude={"version"}), timeout_s=flow_ttl
            ),
            callback_secret=call_settings.callback_secret,
            deadline=now + timedelta(seconds=flow_ttl),
            flow_id=flow_id or str(uuid4()),
        )
        return flow, _join_call(body, caller, flow, session, session_settings)

    async def resume(self, body: JoinCallRequest, caller: Caller, flow: CallFlowRecord) -> None:
        """Ask a call agent for a stored flow (:meth:`create`; a redelivered ``call.join`` whose
        first delivery could not ask) unless one was asked: never twice (two agents in one room).
        Raises :class:`Unavailable` as :meth:`start` does."""
        if flow.join_sent_at is not None or flow.outcome is not None:
            return
        session = await self.sessions.fetch(flow.session_id)
        if session is None or session.status.terminal:
            return
        await self._ask_agent(_join_call(body, caller, flow, session, session.settings))

    async def _ask_agent(self, command: JoinCall) -> None:
        """Ask once: the ask is claimed in the flow's row before the JoinCall goes out (recorded
        after it, a database blip in between left it unrecorded, and the redelivered ``call.join``
        asked a second agent into the same room), and given back when the broker refused it. A
        claim that cannot be given back leaves the flow to its deadline: one failure callback."""
        if not await self.flows.claim_join(command.flow_id):
            return  # asked already
        try:
            await self.commands.join(command)
        except Unavailable:
            try:
                await self.flows.release_join(command.flow_id)
            except DatabaseError as error:
                log.warning("flow %s: the ask is not given back (%s)", command.flow_id, type(error).__name__)
            raise
        log.info(
            "flow %s started (session %s, language %s)", command.flow_id, command.session_id, command.language
        )
