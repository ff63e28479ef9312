"""Video-call flows: POST /join-call (the 2060 Vision Service's shape), POST /v1/calls (versioned,
with settings) and GET /v1/calls/{id}. The flow runs in the background: the call agent joins the
room (JoinCall), the liveness worker runs the session, the notifier ends the flow with one
callback. docs/calls.md."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from uuid import uuid4

from aio_pika.exceptions import AMQPError
from fastapi import APIRouter

from contracts.commands import JoinCall
from contracts.http import (
    CallbackOut,
    CallCreatedResponse,
    CallResponse,
    CallSettings,
    CreateCallRequest,
    JoinCallRequest,
    Problem,
)
from contracts.routing import CommandKey
from infra.broker import COMMANDS
from infra.db.engine import session_factory
from infra.db.flows import CallFlowRecord, CallFlowRepository
from services.gateway.auth import Principal
from services.gateway.dependencies import PrincipalDep, Resources, ResourcesDep
from services.gateway.problems import ProblemError

router = APIRouter(tags=["calls"])
log = logging.getLogger("faceproof.gateway")

#: The instruction catalogs of the call agent: one ``{lang}.json`` per language.
CATALOGS = Path(__file__).resolve().parents[2] / "call_agent" / "catalogs"
DEFAULT_LANGUAGE = "en"
#: The flow outlives its session by this much, so the session's own end is what usually ends it.
FLOW_MARGIN_S = 60

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem},
    422: {"model": Problem, "description": "A URL or a setting is invalid"},
    503: {"model": Problem, "description": "Broker unavailable"},
}


@cache
def _catalog_languages(directory: Path) -> frozenset[str]:
    return frozenset(path.stem.lower() for path in directory.glob("*.json"))


def available_languages() -> frozenset[str]:
    return _catalog_languages(CATALOGS) or frozenset({DEFAULT_LANGUAGE})


def choose_language(requested: str) -> tuple[str, bool]:
    """The catalog language for ``requested`` ("es", "es-MX", "PT_br" ...) and whether it fell back."""
    languages = available_languages()
    tag = requested.strip().lower().replace("_", "-")
    for candidate in (tag, tag.split("-", 1)[0]):
        if candidate in languages:
            return candidate, False
    return DEFAULT_LANGUAGE, True


def _flows(res: Resources) -> CallFlowRepository:
    return CallFlowRepository(session_factory(res.database))


async def _start(
    body: JoinCallRequest, call_settings: CallSettings, principal: Principal, res: Resources
) -> CallCreatedResponse:
    settings = res.settings
    language, fallback = choose_language(body.lang)
    now = datetime.now(UTC)
    session_ttl = call_settings.session_timeout_s or settings.session_ttl_s
    flow_ttl = max(call_settings.timeout_s or settings.flow_timeout_s, session_ttl + FLOW_MARGIN_S)
    session_settings: dict[str, Any] = {
        "challenges": call_settings.challenges,
        "challengeTypes": None
        if call_settings.challenge_types is None
        else [t.value for t in call_settings.challenge_types],
        "auditImages": 2,
        "language": language,
        "expiresInS": session_ttl,
    }
    session, _ = await res.sessions.create(
        principal.owner,
        client_request_token=None,
        settings=session_settings,
        expires_at=now + timedelta(seconds=session_ttl),
        kind="call",
    )
    flow = await _flows(res).create(
        principal.owner,
        session_id=session.id,
        ws_url=body.ws_url,
        callback_base_url=str(body.callback_base_url),
        datastore_base_url=None if body.datastore_base_url is None else str(body.datastore_base_url),
        token=body.token,
        language=language,
        settings={**session_settings, "timeoutS": flow_ttl},
        callback_secret=call_settings.callback_secret,
        deadline=now + timedelta(seconds=flow_ttl),
        flow_id=str(uuid4()),
    )
    command = JoinCall(
        correlation_id=flow.id,
        client_id=principal.client_id,
        flow_id=flow.id,
        session_id=session.id,
        ws_url=body.ws_url,
        callback_base_url=body.callback_base_url,
        datastore_base_url=body.datastore_base_url,
        token=body.token,
        language=language,
        expires_at=session.expires_at,
        settings=session_settings,
    )
    try:
        await res.broker.publish(
            command,
            exchange=COMMANDS,
            routing_key=CommandKey.JOIN_CALL,
            correlation_id=flow.id,
            message_id=command.message_id,
            persist=True,
        )
    except (AMQPError, ConnectionError):
        # The flow row stays: its deadline ends it with a failure callback, as for any lost call.
        raise ProblemError(
            503,
            "Service unavailable",
            "The message broker cannot be reached.",
            code="BROKER_UNAVAILABLE",
            headers={"Retry-After": "5"},
        ) from None
    log.info("flow %s started (session %s, language %s)", flow.id, session.id, language)
    return CallCreatedResponse(
        flow_id=flow.id,
        session_id=session.id,
        status=flow.status.value,
        language=language,
        requested_language=body.lang,
        language_fallback=fallback,
        deadline=flow.deadline,
    )


@router.post(
    "/join-call",
    status_code=202,
    response_model=CallCreatedResponse,
    responses=ERRORS,
    summary="Seed: join a controller's call, check liveness, match its references, call it back",
)
async def join_call(body: JoinCallRequest, principal: PrincipalDep, res: ResourcesDep) -> CallCreatedResponse:
    return await _start(body, CallSettings(), principal, res)


@router.post(
    "/v1/calls",
    status_code=202,
    response_model=CallCreatedResponse,
    responses=ERRORS,
    summary="Start a video-call flow (with optional challenges, timeouts, callback secret)",
)
async def create_call(
    body: CreateCallRequest, principal: PrincipalDep, res: ResourcesDep
) -> CallCreatedResponse:
    return await _start(body, body.settings, principal, res)


def _response(flow: CallFlowRecord) -> CallResponse:
    decision = flow.decision or {}
    return CallResponse(
        flow_id=flow.id,
        session_id=flow.session_id,
        status=flow.status.value,
        language=flow.language,
        created_at=flow.created_at,
        deadline=flow.deadline,
        finished_at=flow.finished_at,
        is_live=decision.get("isLive"),
        confidence=decision.get("confidence"),
        similarity=decision.get("similarity"),
        match=decision.get("match"),
        reasons=list(decision.get("reasons") or []),
        callback=CallbackOut(
            outcome=flow.outcome,
            delivery=None if flow.delivery is None else flow.delivery.value,
            attempts=flow.attempts,
            last_error=flow.last_error,
            status_code=flow.status_code,
        ),
    )


@router.get(
    "/v1/calls/{flow_id}",
    response_model=CallResponse,
    responses={401: {"model": Problem}, 404: {"model": Problem}},
    summary="A video-call flow's status, decision, reasons and callback delivery",
)
async def get_call(flow_id: str, principal: PrincipalDep, res: ResourcesDep) -> CallResponse:
    flow = await _flows(res).get(principal.owner, flow_id)
    if flow is None:
        raise ProblemError(404, "Not found", f"There is no call flow '{flow_id}'.", code="CALL_NOT_FOUND")
    return _response(flow)
