"""POST /v1/compare and the seed's POST /compare."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from contracts.commands import CompareFaces
from contracts.envelope import new_id
from contracts.events import FacesCompared
from contracts.http import (
    CompareRequest,
    CompareResponse,
    FaceOut,
    LegacyCompareResponse,
    ModelOut,
    Problem,
    TargetFaceOut,
)
from contracts.values import ErrorCode, ImageData
from services.gateway.comparisons import BrokerUnavailable, ReplyTimeout
from services.gateway.dependencies import PrincipalDep, ResourcesDep
from services.gateway.images import decode_image_field
from services.gateway.problems import ProblemError

router = APIRouter()

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "Not base64, not an image, or malformed JSON"},
    401: {"model": Problem, "description": "Missing or wrong token"},
    413: {"model": Problem, "description": "Image over the byte or pixel limit"},
    422: {"model": Problem, "description": "No face found (code NO_FACE_IN_SOURCE / NO_FACE_IN_TARGET)"},
    503: {"model": Problem, "description": "Broker unavailable"},
    504: {"model": Problem, "description": "No matcher answered before the deadline"},
}

_ERROR_STATUS = {
    ErrorCode.NO_FACE_IN_SOURCE: (422, "No face found"),
    ErrorCode.NO_FACE_IN_TARGET: (422, "No face found"),
    ErrorCode.INVALID_IMAGE: (400, "Invalid image"),
    ErrorCode.IMAGE_TOO_LARGE: (413, "Image too large"),
    ErrorCode.IMAGE_NOT_FOUND: (422, "Image not found"),
    ErrorCode.INTERNAL: (500, "Internal error"),
}


async def _compare(body: CompareRequest, principal: PrincipalDep, res: ResourcesDep) -> FacesCompared:
    limits = {"max_bytes": res.settings.max_image_bytes, "max_pixels": res.settings.max_image_pixels}
    command = CompareFaces(
        correlation_id=new_id(),
        client_id=principal.client_id,
        source=ImageData(inline=decode_image_field(body.source, field="source", **limits)),
        target=ImageData(inline=decode_image_field(body.target, field="target", **limits)),
        threshold=body.threshold,
        max_target_faces=res.settings.max_target_faces,
    )
    timeout = res.settings.compare_timeout_s
    try:
        event = await res.comparisons.compare(command, deadline_s=timeout)
    except ReplyTimeout:
        raise ProblemError(
            504, "Matcher timeout", f"No matcher answered within {timeout:g} s.", code="MATCHER_TIMEOUT"
        ) from None
    except BrokerUnavailable:
        raise ProblemError(
            503,
            "Service unavailable",
            "The message broker cannot be reached.",
            code="BROKER_UNAVAILABLE",
            headers={"Retry-After": "5"},
        ) from None
    if event.error is not None:
        status, title = _ERROR_STATUS[event.error.code]
        raise ProblemError(status, title, event.error.detail, code=event.error.code)
    return event


def _response(event: FacesCompared) -> CompareResponse:
    assert event.source_face is not None and event.model is not None
    assert event.similarity is not None and event.match is not None and event.threshold is not None
    return CompareResponse(
        similarity=event.similarity,
        match=event.match,
        threshold=event.threshold,
        source_face=FaceOut(box=event.source_face.box, score=event.source_face.score),
        target_faces=[
            TargetFaceOut(box=face.box, score=face.score, similarity=face.similarity, match=face.match)
            for face in event.target_faces
        ],
        model=ModelOut(
            pack=event.model.pack, licence=event.model.licence, commercial_use=event.model.commercial_use
        ),
    )


@router.post(
    "/v1/compare",
    response_model=CompareResponse,
    response_model_by_alias=True,
    responses=ERRORS,
    tags=["compare"],
    summary="Compare the largest source face with every target face",
)
async def compare(body: CompareRequest, principal: PrincipalDep, res: ResourcesDep) -> CompareResponse:
    return _response(await _compare(body, principal, res))


@router.post(
    "/compare",
    response_model=LegacyCompareResponse,
    responses=ERRORS,
    tags=["seed-compatible"],
    summary="Seed-compatible compare: the best similarity only",
)
async def compare_legacy(
    body: CompareRequest, principal: PrincipalDep, res: ResourcesDep
) -> LegacyCompareResponse:
    event = await _compare(body, principal, res)
    assert event.similarity is not None
    return LegacyCompareResponse(comparisonResult=event.similarity)
