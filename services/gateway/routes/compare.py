"""POST /v1/compare, POST /v1/verify (many references) and the seed's POST /compare."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter

from contracts.commands import CompareFaces, MatchReferences
from contracts.envelope import new_id
from contracts.events import FacesCompared, ReferencesMatched
from contracts.http import (
    CompareRequest,
    CompareResponse,
    DecisionOut,
    ErrorOut,
    FaceOut,
    LegacyCompareResponse,
    ModelOut,
    Problem,
    QualityOut,
    ReferenceOut,
    TargetFaceOut,
    VerifyRequest,
    VerifyResponse,
)
from contracts.values import ErrorCode, ErrorInfo, FaceBox, ImageData, ModelInfo, Threshold
from infra.broker import MAX_MESSAGE_BYTES
from services.gateway.comparisons import BrokerUnavailable, MessageTooLarge, ReplyTimeout
from services.gateway.dependencies import PrincipalDep, Resources, ResourcesDep
from services.gateway.json_body import OffloadedJsonRoute
from services.gateway.problems import ProblemError
from services.intake.errors import broker_unavailable
from services.intake.images import read_image_field

router = APIRouter(tags=["compare"], route_class=OffloadedJsonRoute)  # image bodies
Answer = TypeVar("Answer", FacesCompared, ReferencesMatched)

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "Not base64, not an image, or malformed JSON"},
    401: {"model": Problem, "description": "Missing or wrong token"},
    413: {"model": Problem, "description": "Image over the byte or pixel limit"},
    422: {"model": Problem, "description": "No face found (code NO_FACE_IN_...), or an unsupported rate"},
    503: {"model": Problem, "description": "Broker unavailable"},
    504: {"model": Problem, "description": "No matcher answered before the deadline"},
}

_ERROR_STATUS = {
    ErrorCode.NO_FACE_IN_SOURCE: (422, "No face found"),
    ErrorCode.NO_FACE_IN_TARGET: (422, "No face found"),
    ErrorCode.NO_FACE_IN_REFERENCES: (422, "No face found"),
    ErrorCode.SOURCE_FACE_BELOW_QUALITY: (422, "Face below the quality bar"),
    ErrorCode.TARGET_FACES_BELOW_QUALITY: (422, "Face below the quality bar"),
    ErrorCode.UNSUPPORTED_FALSE_MATCH_RATE: (422, "Unsupported false-match rate"),
    ErrorCode.INVALID_IMAGE: (400, "Invalid image"),
    ErrorCode.IMAGE_TOO_LARGE: (413, "Image too large"),
    ErrorCode.IMAGE_NOT_FOUND: (422, "Image not found"),
    ErrorCode.INTERNAL: (500, "Internal error"),
}


async def _image(value: str, field: str, res: Resources) -> ImageData:
    data = await read_image_field(
        value, field=field, max_bytes=res.settings.max_image_bytes, max_pixels=res.settings.max_image_pixels
    )
    return ImageData(inline=data)


async def _answer(pending: Awaitable[Answer], deadline_s: float) -> Answer:
    try:
        answer = await pending
    except ReplyTimeout:
        raise ProblemError(
            504, "Matcher timeout", f"No matcher answered within {deadline_s:g} s.", code="MATCHER_TIMEOUT"
        ) from None
    except BrokerUnavailable:
        raise broker_unavailable() from None  # 503, Retry-After (services/gateway/problems.py)
    except MessageTooLarge:
        raise ProblemError(
            413,
            "Images too large",
            f"Together the images are over {MAX_MESSAGE_BYTES:,} bytes once base64-encoded (about "
            f"{MAX_MESSAGE_BYTES * 3 // 4 // 1_000_000} MB of image data in all): send smaller images.",
            code=ErrorCode.IMAGE_TOO_LARGE,
        ) from None
    if answer.error is not None:
        raise _problem(answer.error)
    return answer


def _problem(error: ErrorInfo) -> ProblemError:
    status, title = _ERROR_STATUS[error.code]
    return ProblemError(status, title, error.detail, code=error.code)


def _face_fields(face: FaceBox) -> dict[str, Any]:
    quality = QualityOut(**face.quality.model_dump()) if face.quality else None
    return {
        "box": face.box,
        "score": face.score,
        "quality": quality,
        "quality_issues": list(face.quality_issues),
    }


def _face(face: FaceBox) -> FaceOut:
    return FaceOut(**_face_fields(face))


def _decision(
    similarity: float | None, match: bool | None, threshold: Threshold | None, model: ModelInfo | None
) -> dict[str, Any]:
    assert similarity is not None and match is not None and threshold is not None and model is not None
    return DecisionOut(
        similarity=similarity,
        match=match,
        threshold=threshold.value,
        threshold_source=threshold.source,
        target_false_match_rate=threshold.false_match_rate,
        model=ModelOut(pack=model.pack, licence=model.licence, commercial_use=model.commercial_use),
    ).model_dump()


async def _compare(body: CompareRequest, principal: PrincipalDep, res: ResourcesDep) -> FacesCompared:
    command = CompareFaces(
        correlation_id=new_id(),
        client_id=principal.client_id,
        source=await _image(body.source, "source", res),
        target=await _image(body.target, "target", res),
        threshold=body.threshold,
        target_false_match_rate=body.target_false_match_rate,
        quality_filter=body.quality_filter,
        max_target_faces=res.settings.max_target_faces,
    )
    deadline = res.settings.compare_timeout_s
    return await _answer(res.comparisons.compare(command, deadline_s=deadline), deadline)


@router.post(
    "/v1/compare",
    response_model=CompareResponse,
    responses=ERRORS,
    summary="Compare the largest source face with every target face",
)
async def compare(body: CompareRequest, principal: PrincipalDep, res: ResourcesDep) -> CompareResponse:
    event = await _compare(body, principal, res)
    assert event.source_face is not None
    return CompareResponse(
        **_decision(event.similarity, event.match, event.threshold, event.model),
        source_face=_face(event.source_face),
        target_faces=[
            TargetFaceOut(**_face_fields(face), similarity=face.similarity, match=face.match)
            for face in event.target_faces
        ],
    )


@router.post(
    "/v1/verify",
    response_model=VerifyResponse,
    responses=ERRORS,
    summary="Is the person on the probe any of the references? (many-reference compare)",
)
async def verify(body: VerifyRequest, principal: PrincipalDep, res: ResourcesDep) -> VerifyResponse:
    limit = res.settings.max_references
    if len(body.references) > limit:
        raise ProblemError(
            413, "Too many references", f"At most {limit} references per request.", code="TOO_MANY_REFERENCES"
        )
    command = MatchReferences(
        correlation_id=new_id(),
        client_id=principal.client_id,
        probe=await _image(body.probe, "probe", res),
        references=[await _image(value, f"references[{i}]", res) for i, value in enumerate(body.references)],
        fusion=body.fusion,
        threshold=body.threshold,
        target_false_match_rate=body.target_false_match_rate,
        quality_filter=body.quality_filter,
    )
    deadline = res.settings.compare_timeout_s
    event = await _answer(res.comparisons.match_references(command, deadline_s=deadline), deadline)
    assert event.probe_face is not None and event.threshold is not None
    threshold = event.threshold.value
    return VerifyResponse(
        **_decision(event.similarity, event.match, event.threshold, event.model),
        fusion=event.fusion,
        probe_face=_face(event.probe_face),
        references=[
            ReferenceOut(
                index=reference.index,
                similarity=reference.similarity,
                match=None if reference.similarity is None else reference.similarity >= threshold,
                face=_face(reference.face) if reference.face else None,
                error=ErrorOut(code=reference.error.code, detail=reference.error.detail)
                if reference.error
                else None,
            )
            for reference in event.references
        ],
    )


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
