"""Liveness sessions: create and read, /v1 and the seed's shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter

from contracts.http import (
    CreateSessionRequest,
    CreateSessionResponse,
    LegacyCreateSessionResponse,
    LegacySessionResponse,
    Problem,
    SessionResponse,
)
from infra.db.repositories import SessionRecord
from services.gateway.auth import Principal
from services.gateway.dependencies import PrincipalDep, Resources, ResourcesDep
from services.gateway.problems import ProblemError

router = APIRouter(tags=["sessions"])

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem},
    404: {"model": Problem},
    422: {"model": Problem},
}


async def _create(body: CreateSessionRequest, principal: Principal, res: Resources) -> SessionRecord:
    ttl = body.settings.expires_in_s or res.settings.session_ttl_s
    record, _ = await res.sessions.create(
        principal.owner,
        client_request_token=body.client_request_token,
        settings=body.settings.model_dump(mode="json"),
        expires_at=datetime.now(UTC) + timedelta(seconds=ttl),
    )
    return record


async def _read(session_id: str, principal: Principal, res: Resources) -> SessionRecord:
    record = await res.sessions.get(principal.owner, session_id)
    if record is None:
        raise ProblemError(404, "Not found", f"There is no session '{session_id}'.", code="SESSION_NOT_FOUND")
    if not record.status.terminal and record.expires_at <= datetime.now(UTC):
        record = await res.sessions.expire(record)
    return record


@router.post(
    "/v1/sessions",
    status_code=201,
    response_model=CreateSessionResponse,
    responses=ERRORS,
    summary="Create a liveness session (idempotent per clientRequestToken)",
)
async def create_session(
    principal: PrincipalDep,
    res: ResourcesDep,
    body: CreateSessionRequest | None = None,
) -> CreateSessionResponse:
    record = await _create(body or CreateSessionRequest(), principal, res)
    return CreateSessionResponse(session_id=record.id, status=record.status, expires_at=record.expires_at)


@router.get(
    "/v1/sessions/{session_id}",
    response_model=SessionResponse,
    responses=ERRORS,
    summary="Read a session's status and result",
)
async def get_session(session_id: str, principal: PrincipalDep, res: ResourcesDep) -> SessionResponse:
    record = await _read(session_id, principal, res)
    result = record.result or {}
    return SessionResponse(
        session_id=record.id,
        client_request_token=record.client_request_token,
        status=record.status,
        created_at=record.created_at,
        expires_at=record.expires_at,
        is_live=result.get("isLive"),
        confidence=result.get("confidence"),
        reasons=result.get("reasons", []),
        comparison_result=result.get("comparisonResult"),
    )


@router.post(
    "/session",
    response_model=LegacyCreateSessionResponse,
    responses=ERRORS,
    tags=["seed-compatible"],
    summary="Seed-compatible session creation",
)
async def create_session_legacy(
    principal: PrincipalDep,
    res: ResourcesDep,
    body: CreateSessionRequest | None = None,
) -> LegacyCreateSessionResponse:
    record = await _create(body or CreateSessionRequest(), principal, res)
    return LegacyCreateSessionResponse(SessionId=record.id)


@router.get(
    "/session/{session_id}",
    response_model=LegacySessionResponse,
    responses=ERRORS,
    tags=["seed-compatible"],
    summary="Seed-compatible session read",
)
async def get_session_legacy(
    session_id: str, principal: PrincipalDep, res: ResourcesDep
) -> LegacySessionResponse:
    record = await _read(session_id, principal, res)
    result = record.result or {}
    return LegacySessionResponse(
        clientRequestToken=record.client_request_token,
        status=record.status.value,
        comparisonResult=result.get("comparisonResult"),
    )
