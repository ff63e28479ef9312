"""Liveness sessions: create and read (/v1 and the seed's shapes), the hosted page and its script,
and the two routes the browser calls with its client token (offer, status). docs/sessions.md."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response

from contracts.commands import StartSession
from contracts.documents import LivenessDecisionDocument, SessionResult
from contracts.envelope import new_id
from contracts.events import SessionStarted
from contracts.http import (
    CameraReport,
    ChallengeOut,
    ClientStatusResponse,
    CreateSessionRequest,
    CreateSessionResponse,
    ImageUrl,
    LegacyCreateSessionResponse,
    LegacySessionResponse,
    OfferRequest,
    OfferResponse,
    Problem,
    SessionResponse,
)
from contracts.routing import CONNECTION_SEQUENCE_STRIDE
from contracts.values import ErrorCode
from domain.cameras import VIRTUAL_CAMERA, virtual_camera
from domain.records import SessionRecord
from domain.sessions import Decided, Expired
from infra.lifecycle import SessionLifecycle
from infra.storage.errors import StorageError
from services.gateway.auth import Principal
from services.gateway.client_tokens import bearer_token, client_unauthorized, token_matches
from services.gateway.comparisons import BrokerUnavailable, ReplyTimeout
from services.gateway.dependencies import PrincipalDep, Resources, ResourcesDep, charge_session
from services.gateway.failed_logins import client_address
from services.gateway.json_body import OffloadedJsonRoute
from services.gateway.problems import ProblemError
from services.intake.errors import broker_unavailable
from services.intake.sessions import SessionCreator, client_url

router = APIRouter(tags=["sessions"], route_class=OffloadedJsonRoute)  # image bodies
log = logging.getLogger("faceproof.gateway")

STATIC = Path(__file__).resolve().parent.parent / "static"
PRESIGN_TTL = timedelta(minutes=15)

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem},
    404: {"model": Problem},
    422: {"model": Problem},
}
CREATE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    400: {"model": Problem, "description": "Reference not base64 or not an image"},
    413: {"model": Problem, "description": "Reference over the byte or pixel limit"},
    422: {"model": Problem, "description": "Invalid settings, or a reference URL refused or unfetchable"},
}
OFFER_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "INVALID_OFFER: the call agent could not answer it"},
    401: {"model": Problem, "description": "Missing or wrong client token"},
    404: {"model": Problem, "description": "SESSION_NOT_FOUND"},
    409: {
        "model": Problem,
        "description": "SESSION_FINISHED, SESSION_EXPIRED or SESSION_IN_USE; VIRTUAL_CAMERA: the page "
        "reported a virtual or fake camera, and the session has failed with that reason",
    },
    413: {"model": Problem, "description": "SDP_TOO_LARGE"},
    422: {"model": Problem, "description": "An unknown field or an out-of-range value in the camera report"},
    503: {
        "model": Problem,
        "description": "CALL_AGENT_BUSY: the call agent holds FACEPROOF_MAX_CONCURRENT_CALLS connections "
        "(offer again after Retry-After seconds); BROKER_UNAVAILABLE",
    },
    504: {"model": Problem, "description": "CALL_AGENT_TIMEOUT"},
}
#: Seconds a browser refused with CALL_AGENT_BUSY waits before it offers again (Retry-After).
BUSY_RETRY_AFTER_S = 5
#: What a session without a result reads as (it has not finished, or expired undecided).
_NO_RESULT = SessionResult(is_live=False)

# Content served to browsers: same-origin only, camera streams as media, nothing inline.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data: blob:; media-src 'self' blob: mediastream:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Permissions-Policy": "camera=(self), microphone=()",
}
_ASSETS = {
    "client.js": ("session.js", "text/javascript; charset=utf-8"),
    "page.js": ("page.js", "text/javascript; charset=utf-8"),
    "client.css": ("session.css", "text/css; charset=utf-8"),
}


# --------------------------------------------------------------------------- helpers


def _not_found(session_id: str) -> ProblemError:
    return ProblemError(404, "Not found", f"There is no session '{session_id}'.", code="SESSION_NOT_FOUND")


def _conflict(code: str, detail: str) -> ProblemError:
    return ProblemError(409, "Conflict", detail, code=code)


async def _expire_if_due(record: SessionRecord, res: Resources) -> SessionRecord:
    """The lazy expiry: an overdue session read here ends EXPIRED (``infra.lifecycle``: one
    SessionFinished, one SESSION_DECIDED record, the lockout rule) and is answered as it now is."""
    if record.status.terminal or record.expires_at > datetime.now(UTC):
        return record
    ended = await SessionLifecycle(res.sessions).end(record.id, Expired())
    # None: someone else finished or expired it first
    return ended or await res.sessions.fetch(record.id) or record


def _base_url(request: Request, res: Resources) -> str:
    return (res.settings.public_url or str(request.base_url)).rstrip("/")


async def _create(
    body: CreateSessionRequest, principal: Principal, res: Resources, *, reissue: bool = True
) -> tuple[SessionRecord, str]:
    """Create (or, for a repeated clientRequestToken, find) the session (services.intake.sessions)."""
    creator = SessionCreator(res.settings, res.sessions, res.store, res.failures)
    return await creator.create(body, principal, reissue=reissue)


async def _read(session_id: str, principal: Principal, res: Resources) -> SessionRecord:
    record = await res.sessions.get(principal.owner, session_id)
    if record is None:
        raise _not_found(session_id)
    return await _expire_if_due(record, res)


async def _client_session(
    request: Request, session_id: str, authorization: str | None, res: Resources
) -> SessionRecord:
    """The session whose client token the caller holds (the API key is not accepted here)."""
    token = bearer_token(authorization)
    if token is None:
        raise client_unauthorized()
    address, logins = client_address(request.scope), res.failed_logins
    if logins is not None:
        logins.check(address)  # before the lookup (services/gateway/failed_logins.py)
    record = await res.sessions.fetch(session_id)
    # an unknown session answers as a wrong token: without a key, nobody learns which ids exist
    if record is None or not token_matches(token, record.client_token_hash):
        if logins is not None:
            logins.failed(address)
        raise client_unauthorized()
    return record


async def _presign(res: Resources, key: object) -> ImageUrl | None:
    if not isinstance(key, str) or not key:
        return None
    try:
        return ImageUrl(url=await res.store.presign_get(key, PRESIGN_TTL))
    except StorageError:
        log.warning("could not presign an image of a session")
        return None


def _static(name: str, media_type: str) -> Response:
    return Response((STATIC / name).read_bytes(), media_type=media_type, headers=_PAGE_HEADERS)


# --------------------------------------------------------------------------- /v1 routes


@router.post(
    "/v1/sessions",
    status_code=201,
    response_model=CreateSessionResponse,
    responses=CREATE_ERRORS,
    summary="Create a liveness session (idempotent per clientRequestToken)",
)
async def create_session(
    request: Request,
    principal: PrincipalDep,
    res: ResourcesDep,
    body: CreateSessionRequest | None = None,
) -> CreateSessionResponse:
    body = body or CreateSessionRequest()
    record, token = await _create(body, principal, res)
    return CreateSessionResponse(
        session_id=record.id,
        status=record.status,
        expires_at=record.expires_at,
        client_token=token,
        client_url=client_url(_base_url(request, res), record.id, token),
    )


# Declared before /v1/sessions/{session_id}: these names are not session ids.
def _asset_route(name: str) -> None:
    file, media_type = _ASSETS[name]

    async def serve() -> Response:
        return _static(file, media_type)

    router.add_api_route(
        f"/v1/sessions/{name}",
        serve,
        methods=["GET"],
        response_class=Response,
        include_in_schema=name == "client.js",
        summary="The embeddable browser script: FaceproofSession.start({...})",
    )


for _name in _ASSETS:
    _asset_route(_name)


@router.get(
    "/v1/sessions/{session_id}",
    response_model=SessionResponse,
    responses=ERRORS,
    summary="Read a session's status and result",
)
async def get_session(session_id: str, principal: PrincipalDep, res: ResourcesDep) -> SessionResponse:
    record = await _read(session_id, principal, res)
    result = record.result or _NO_RESULT
    audit = [await _presign(res, key) for key in result.audit_image_keys]
    return SessionResponse(
        session_id=record.id,
        client_request_token=record.client_request_token,
        status=record.status,
        created_at=record.created_at,
        expires_at=record.expires_at,
        is_live=None if record.result is None else result.is_live,
        confidence=result.confidence,
        reasons=list(result.reasons),
        comparison_result=result.comparison_result,
        comparison_match=result.comparison_match,
        reference_image=await _presign(res, result.reference_image_key),
        audit_images=[image for image in audit if image is not None],
        purged=record.purged_at is not None,
        challenges=[
            ChallengeOut(type=c.type.value, status=c.status, reason=c.reason) for c in result.challenges
        ],
    )


@router.get(
    "/v1/sessions/{session_id}/client",
    response_class=Response,
    summary="The hosted liveness page (open clientUrl; the token is in the fragment)",
    responses={200: {"content": {"text/html": {}}}},
)
async def session_page(session_id: str) -> Response:
    return _static("session.html", "text/html; charset=utf-8")


def _refuse_ended(record: SessionRecord) -> None:
    """409 for a session that has finished or whose time is up."""
    if record.status.terminal:
        raise _conflict("SESSION_FINISHED", f"The session has finished ({record.status.value}).")
    if record.expires_at <= datetime.now(UTC):
        raise _conflict("SESSION_EXPIRED", "The session has expired.")


async def _claim_connection(record: SessionRecord, connection_id: str, res: Resources) -> SessionRecord:
    """The session, now streamed by ``connection_id`` (409 when it ended or another one streams it)."""
    claimed = await res.sessions.claim_connection(
        record.id, connection_id, stale_after_s=res.settings.connection_stale_s
    )
    if claimed is None:
        _refuse_ended(await res.sessions.fetch(record.id) or record)
        raise _conflict("SESSION_IN_USE", "Another connection is streaming this session.")
    return claimed


async def _start_session(
    claimed: SessionRecord, connection_id: str, sdp: str, res: Resources
) -> SessionStarted:
    """Hand the offer to a call agent (504 or 503 when none answers; the connection is released
    whatever goes wrong)."""
    settings = res.settings
    try:
        command = StartSession(
            correlation_id=claimed.id,
            session_id=claimed.id,
            connection_id=connection_id,
            offer_sdp=sdp,
            language=claimed.settings.language,
            expires_at=claimed.expires_at,
            sequence_base=(claimed.connections - 1) * CONNECTION_SEQUENCE_STRIDE,
        )
        return await res.call_agents.start_session(command, deadline_s=settings.offer_timeout_s)
    except ReplyTimeout:
        await res.sessions.release_connection(claimed.id, connection_id)
        raise ProblemError(
            504,
            "Call agent timeout",
            f"No call agent answered within {settings.offer_timeout_s:g} s.",
            code="CALL_AGENT_TIMEOUT",
        ) from None
    except BrokerUnavailable:
        await res.sessions.release_connection(claimed.id, connection_id)
        raise broker_unavailable() from None  # 503, Retry-After (services/gateway/problems.py)
    except BaseException:
        await res.sessions.release_connection(claimed.id, connection_id)
        raise


def _offer_refused(answer: SessionStarted) -> ProblemError:
    """Why the call agent gave no answer: busy (503, offer again) or the offer itself (400)."""
    if answer.error is not None and answer.error.code is ErrorCode.CALL_AGENT_BUSY:
        return ProblemError(
            503,
            "Call agent busy",
            "Every call agent slot is taken; offer again shortly.",
            code=ErrorCode.CALL_AGENT_BUSY.value,
            headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
        )
    detail = answer.error.detail if answer.error else "The call agent sent no answer."
    return ProblemError(400, "Invalid offer", detail, code="INVALID_OFFER")


async def _fail_virtual_camera(record: SessionRecord, camera: CameraReport, res: Resources) -> None:
    """A camera that names itself virtual or fake ends the session FAILED with VIRTUAL_CAMERA
    (a hard failure, confidence 0: no frame of it is judged) and the offer is refused (409)."""
    found = virtual_camera(camera.label)
    if found is None:
        return
    decision = LivenessDecisionDocument(is_live=False, confidence=0.0, reasons=[VIRTUAL_CAMERA])
    await SessionLifecycle(res.sessions).end(record.id, Decided(decision))  # None: it ended meanwhile
    raise _conflict(VIRTUAL_CAMERA, f"The camera is a virtual or fake device ({found!r} in its name).")


@router.post(
    "/v1/sessions/{session_id}/offer",
    response_model=OfferResponse,
    responses=OFFER_ERRORS,
    summary="The browser's WebRTC offer (client token); answered by a call agent",
)
async def offer(
    request: Request,
    session_id: str,
    body: OfferRequest,
    res: ResourcesDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> OfferResponse:
    settings = res.settings
    record = await _client_session(request, session_id, authorization, res)
    await charge_session(request, session_id)
    if record.status.terminal:
        raise _conflict("SESSION_FINISHED", f"The session has finished ({record.status.value}).")
    record = await _expire_if_due(record, res)
    if record.status.terminal:
        raise _conflict("SESSION_EXPIRED", "The session has expired.")
    if len(body.sdp.encode()) > settings.max_sdp_bytes:
        raise ProblemError(
            413, "SDP too large", f"The offer is over {settings.max_sdp_bytes} bytes.", code="SDP_TOO_LARGE"
        )
    if body.camera is not None and settings.reject_virtual_cameras:
        await _fail_virtual_camera(record, body.camera, res)
    connection_id = new_id()
    claimed = await _claim_connection(record, connection_id, res)
    answer = await _start_session(claimed, connection_id, body.sdp, res)
    if answer.error is not None or not answer.answer_sdp:
        await res.sessions.release_connection(session_id, connection_id)
        raise _offer_refused(answer)
    return OfferResponse(sdp=answer.answer_sdp, type=answer.answer_type or "answer")


@router.get(
    "/v1/sessions/{session_id}/status",
    response_model=ClientStatusResponse,
    responses={401: {"model": Problem}, 404: {"model": Problem}},
    summary="The session's status, for the browser (client token)",
)
async def client_status(
    request: Request,
    session_id: str,
    res: ResourcesDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> ClientStatusResponse:
    record = await _client_session(request, session_id, authorization, res)
    await charge_session(request, session_id)
    record = await _expire_if_due(record, res)
    return ClientStatusResponse(status=record.status)


# --------------------------------------------------------------------------- seed-compatible


@router.post(
    "/session",
    response_model=LegacyCreateSessionResponse,
    responses=CREATE_ERRORS,
    tags=["seed-compatible"],
    summary="Seed-compatible session creation",
)
async def create_session_legacy(
    principal: PrincipalDep,
    res: ResourcesDep,
    body: CreateSessionRequest | None = None,
) -> LegacyCreateSessionResponse:
    body = body or CreateSessionRequest()
    # the seed's answer has no client token: a replay leaves the one /v1 issued working
    record, _ = await _create(body, principal, res, reissue=False)
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
    return LegacySessionResponse(
        clientRequestToken=record.client_request_token,
        status=record.status.value,
        comparisonResult=None if record.result is None else record.result.comparison_result,
    )
