"""Video-call flows: POST /join-call (the 2060 Vision Service's shape), POST /v1/calls (versioned,
with settings) and GET /v1/calls/{id}. The flow runs in the background: the call agent joins the
room (JoinCall), the liveness worker runs the session, the notifier ends the flow with one
callback. docs/calls.md."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter

from contracts.documents import FlowDecision
from contracts.http import (
    CallbackOut,
    CallCreatedResponse,
    CallResponse,
    CallSettings,
    CreateCallRequest,
    JoinCallRequest,
    Problem,
)
from domain.records import CallFlowRecord
from services.gateway.auth import Principal
from services.gateway.dependencies import PrincipalDep, Resources, ResourcesDep
from services.gateway.problems import ProblemError
from services.intake.calls import CallStarter

__all__ = ["router"]

router = APIRouter(tags=["calls"])
log = logging.getLogger("faceproof.gateway")

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem},
    422: {"model": Problem, "description": "A URL or a setting is invalid"},
    503: {"model": Problem, "description": "Broker unavailable"},
}


async def _start(
    body: JoinCallRequest, call_settings: CallSettings, principal: Principal, res: Resources
) -> CallCreatedResponse:
    """Create the flow and publish JoinCall (services.intake.calls)."""
    starter = CallStarter(res.settings, res.sessions, res.flows, res.call_commands)
    return await starter.start(body, call_settings, principal)


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
    decision = flow.decision or FlowDecision()
    return CallResponse(
        flow_id=flow.id,
        session_id=flow.session_id,
        status=flow.status.value,
        language=flow.language,
        created_at=flow.created_at,
        deadline=flow.deadline,
        finished_at=flow.finished_at,
        is_live=decision.is_live,
        confidence=decision.confidence,
        similarity=decision.similarity,
        match=decision.match,
        reasons=list(decision.reasons),
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
    flow = await res.flows.get(principal.owner, flow_id)
    if flow is None:
        raise ProblemError(404, "Not found", f"There is no call flow '{flow_id}'.", code="CALL_NOT_FOUND")
    return _response(flow)
