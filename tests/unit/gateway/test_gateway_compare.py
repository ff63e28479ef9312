"""POST /v1/compare, /v1/verify and the seed's /compare over a fake matcher: the command the
matcher gets (the caller's client, the decoded images, the deadline) and what the caller reads
(the decision, or the matcher's error as a problem with its status and code)."""

from __future__ import annotations

import base64

import httpx
import pytest

from contracts.commands import CompareFaces, MatchReferences
from contracts.events import FacesCompared, ReferencesMatched
from contracts.values import (
    ErrorCode,
    ErrorInfo,
    Fusion,
    ReferenceScore,
)
from infra.rpc import BrokerUnavailable, ReplyTimeout
from infra.settings import Settings
from tests.unit.gateway.fakes import API_KEY, FACE, MODEL, THRESHOLD, FakeComparisons, Gateway, compared
from tests.unit.intake.fakes import jpeg

IMAGE = base64.b64encode(jpeg()).decode()
KEY = {"Authorization": f"Bearer {API_KEY}"}


def failed(code: ErrorCode) -> FakeComparisons:
    return FakeComparisons(
        compared=lambda command: FacesCompared(
            correlation_id=command.correlation_id,
            request_id=command.message_id,
            model=MODEL,
            error=ErrorInfo(code=code, detail="why"),
        )
    )


async def post(
    gateway: Gateway, path: str, body: dict[str, object], headers: dict[str, str] = KEY
) -> httpx.Response:
    async with gateway.client() as client:
        return await client.post(path, json=body, headers=headers)


async def test_a_compare_sends_the_decoded_images_for_the_caller_and_returns_the_decision() -> None:
    gateway = Gateway(
        settings=Settings(rate_limits=False, compare_timeout_s=9, max_target_faces=4),
        comparisons=FakeComparisons(compared=compared),
    )
    response = await post(gateway, "/v1/compare", {"source": IMAGE, "target": IMAGE, "qualityFilter": "LOW"})
    assert response.status_code == 200
    answer = response.json()
    assert (answer["similarity"], answer["match"], answer["threshold"]) == (0.83, True, 0.6)
    assert (answer["thresholdSource"], answer["targetFalseMatchRate"]) == ("DEFAULT", 0.001)
    assert answer["model"] == {"pack": "permissive", "licence": "MIT + Apache-2.0", "commercialUse": True}
    assert answer["sourceFace"]["box"] == [1.0, 2.0, 30.0, 40.0]
    assert [(face["similarity"], face["match"]) for face in answer["targetFaces"]] == [(0.83, True)]
    [(command, deadline)] = gateway.comparisons.asked
    assert isinstance(command, CompareFaces) and deadline == 9
    assert command.client_id == "client-1" and command.max_target_faces == 4
    assert command.source.inline == jpeg() and command.quality_filter == "LOW"


async def test_the_seed_compare_answers_the_similarity_only() -> None:
    gateway = Gateway(comparisons=FakeComparisons(compared=compared))
    response = await post(gateway, "/compare", {"source": IMAGE, "target": IMAGE})
    assert response.status_code == 200 and response.json() == {"comparisonResult": 0.83}


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (ErrorCode.NO_FACE_IN_SOURCE, 422),
        (ErrorCode.TARGET_FACES_BELOW_QUALITY, 422),
        (ErrorCode.UNSUPPORTED_FALSE_MATCH_RATE, 422),
        (ErrorCode.INVALID_IMAGE, 400),
        (ErrorCode.IMAGE_TOO_LARGE, 413),
    ],
)
async def test_the_matchers_error_is_a_problem_with_its_code(code: ErrorCode, status: int) -> None:
    response = await post(
        Gateway(comparisons=failed(code)), "/v1/compare", {"source": IMAGE, "target": IMAGE}
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert (response.json()["code"], response.json()["detail"]) == (code.value, "why")


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [(ReplyTimeout("late"), 504, "MATCHER_TIMEOUT"), (BrokerUnavailable("down"), 503, "BROKER_UNAVAILABLE")],
)
async def test_no_matcher_answer_is_a_problem(error: Exception, status: int, code: str) -> None:
    gateway = Gateway(comparisons=FakeComparisons(compared=error))
    response = await post(gateway, "/v1/compare", {"source": IMAGE, "target": IMAGE})
    assert response.status_code == status and response.json()["code"] == code


async def test_bad_input_never_reaches_the_matcher() -> None:
    gateway = Gateway(comparisons=FakeComparisons(compared=compared))
    not_image = base64.b64encode(b"plain text").decode()
    assert (
        await post(gateway, "/v1/compare", {"source": IMAGE, "target": IMAGE}, headers={})
    ).status_code == 401
    response = await post(gateway, "/v1/compare", {"source": not_image, "target": IMAGE})
    assert response.status_code == 400 and response.json()["code"] == "INVALID_IMAGE"
    assert gateway.comparisons.asked == []


# --------------------------------------------------------------------------- /v1/verify


def matched(command: MatchReferences) -> ReferencesMatched:
    return ReferencesMatched(
        correlation_id=command.correlation_id,
        request_id=command.message_id,
        model=MODEL,
        similarity=0.7,
        match=True,
        threshold=THRESHOLD,
        fusion=command.fusion,
        probe_face=FACE,
        references=[
            ReferenceScore(index=0, similarity=0.7, face=FACE),
            ReferenceScore(index=1, similarity=0.2, face=FACE),
            ReferenceScore(index=2, error=ErrorInfo(code=ErrorCode.NO_FACE_IN_TARGET, detail="none")),
        ],
    )


async def test_verify_reports_each_reference_against_the_threshold() -> None:
    gateway = Gateway(comparisons=FakeComparisons(matched=matched))
    body = {"probe": IMAGE, "references": [IMAGE, IMAGE, IMAGE], "fusion": "MEAN"}
    response = await post(gateway, "/v1/verify", body)
    assert response.status_code == 200
    answer = response.json()
    assert (answer["similarity"], answer["match"], answer["fusion"]) == (0.7, True, "MEAN")
    assert [(ref["index"], ref["match"]) for ref in answer["references"]] == [
        (0, True),
        (1, False),
        (2, None),
    ]
    assert answer["references"][2]["error"] == {"code": "NO_FACE_IN_TARGET", "detail": "none"}
    [(command, _)] = gateway.comparisons.asked
    assert isinstance(command, MatchReferences) and command.fusion is Fusion.MEAN
    assert len(command.references) == 3 and command.client_id == "client-1"


async def test_verify_refuses_more_references_than_the_limit() -> None:
    gateway = Gateway(
        settings=Settings(rate_limits=False, max_references=2), comparisons=FakeComparisons(matched=matched)
    )
    response = await post(gateway, "/v1/verify", {"probe": IMAGE, "references": [IMAGE] * 3})
    assert response.status_code == 413 and response.json()["code"] == "TOO_MANY_REFERENCES"
    assert gateway.comparisons.asked == []


async def test_a_body_with_many_mistakes_gets_the_first_twenty_not_an_answer_as_large() -> None:
    gateway = Gateway(comparisons=FakeComparisons(compared=compared))
    body: dict[str, object] = {"source": IMAGE, "target": IMAGE} | {f"unknown{i}": 1 for i in range(500)}
    response = await post(gateway, "/v1/compare", body)
    assert response.status_code == 422 and response.json()["code"] == "INVALID_REQUEST"
    errors = response.json()["errors"]
    assert len(errors) == 20 and {error["type"] for error in errors} == {"extra_forbidden"}
    assert gateway.comparisons.asked == []
