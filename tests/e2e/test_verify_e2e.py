"""Many references in one request, and decisions at a chosen threshold or false-match rate."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from tests.e2e.conftest import Stack, image_b64
from tests.e2e.test_compare_e2e import compare
from tests.paths import DATA_DIR, PEOPLE

pytestmark = pytest.mark.e2e


def verify(stack: Stack, probe: str, references: list[str], **extra: object) -> tuple[int, dict[str, object]]:
    body = {
        "probe": image_b64(PEOPLE / probe),
        "references": [image_b64(PEOPLE / r) for r in references],
        **extra,
    }
    with stack.client() as client:
        response = client.post("/v1/verify", json=body)
    return response.status_code, response.json()


def test_probe_is_one_of_the_references(stack: Stack) -> None:
    status, body = verify(stack, "obama.jpg", ["biden.jpg", "obama2.jpg", "knn_train__rose_leslie__img1.jpg"])
    assert status == 200, body
    refs = body["references"]
    assert [r["index"] for r in refs] == [0, 1, 2]
    assert [r["match"] for r in refs] == [False, True, False]
    assert body["match"] is True and body["fusion"] == "MAX"
    assert body["similarity"] == refs[1]["similarity"]


def test_mean_fusion_needs_every_reference_to_agree(stack: Stack) -> None:
    references = ["obama2.jpg", "biden.jpg", "knn_train__rose_leslie__img1.jpg"]
    status, body = verify(stack, "obama.jpg", references, fusion="MEAN")
    assert status == 200, body
    sims = [r["similarity"] for r in body["references"]]
    assert body["similarity"] == pytest.approx(sum(sims) / 3, abs=1e-5)
    assert body["references"][0]["match"] is True and body["match"] is False


def test_a_reference_without_a_face_is_reported_not_fatal(stack: Stack) -> None:
    body = {
        "probe": image_b64(PEOPLE / "biden.jpg"),
        "references": [
            image_b64(DATA_DIR / "faces" / "negative" / "bulk__view.jpg"),
            image_b64(PEOPLE / "knn_train__biden__biden2.jpg"),
        ],
    }
    with stack.client() as client:
        response = client.post("/v1/verify", json=body)
    assert response.status_code == 200, response.text
    first, second = response.json()["references"]
    assert first["error"]["code"] == "NO_FACE_IN_TARGET" and first["similarity"] is None
    assert second["match"] is True


def test_too_many_references_is_413(stack: Stack) -> None:
    status, body = verify(stack, "obama.jpg", ["obama2.jpg"] * 11)
    assert status == 413 and body["code"] == "TOO_MANY_REFERENCES"


def test_a_body_of_a_million_bad_references_is_refused_at_once_and_the_gateway_stays_responsive(
    stack: Stack,
) -> None:
    """The attack: one request whose list holds 800,000 invalid items (1.6 MB, under verify's body
    limit). Validating every item built one error each and an answer as large: seconds of the
    gateway's event loop and a gigabyte. Since 2026-12-08 the request guard refuses a body of that
    many values before it is parsed (FACEPROOF_MAX_JSON_VALUES); a list under that count but over
    the references' limit still has its length refused before its items."""
    huge = b'{"probe": "x", "references": [' + b",".join([b"1"] * 800_000) + b"]}"
    long = b'{"probe": "x", "references": [' + b",".join([b"1"] * 5_000) + b"]}"
    with stack.client() as client, stack.client() as prober, concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        attack = pool.submit(
            client.post, "/v1/verify", content=huge, headers={"content-type": "application/json"}
        )
        health: list[float] = []
        while not attack.done():
            probe = time.monotonic()
            assert prober.get("/readyz").status_code == 200
            health.append(time.monotonic() - probe)
        response = attack.result()
        elapsed = time.monotonic() - started
        under_the_count = client.post(
            "/v1/verify", content=long, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400, response.text[:500]
    assert response.json()["code"] == "JSON_TOO_MANY_VALUES"
    assert elapsed < 5.0 and max(health, default=0.0) < 1.0
    assert under_the_count.status_code == 422, under_the_count.text[:500]
    problem = under_the_count.json()
    assert problem["code"] == "INVALID_REQUEST"
    assert [error["type"] for error in problem["errors"]] == ["too_long"]
    assert problem["errors"][0]["loc"][-1] == "references"
    assert len(under_the_count.content) < 2_000


def test_default_threshold_says_where_it_comes_from(stack: Stack) -> None:
    status, body = compare(stack, image_b64(PEOPLE / "obama.jpg"), image_b64(PEOPLE / "obama2.jpg"))
    assert status == 200
    assert body["thresholdSource"] == "DEFAULT" and body["targetFalseMatchRate"] == 0.001


def test_threshold_from_the_request(stack: Stack) -> None:
    status, body = compare(
        stack, image_b64(PEOPLE / "obama.jpg"), image_b64(PEOPLE / "obama2.jpg"), threshold=0.9999999
    )
    assert status == 200
    assert body["threshold"] == 0.9999999 and body["thresholdSource"] == "REQUEST"
    assert body["match"] is (body["similarity"] >= 0.9999999)


def test_stricter_false_match_rate_gives_a_higher_threshold(stack: Stack) -> None:
    source, target = image_b64(PEOPLE / "obama.jpg"), image_b64(PEOPLE / "obama2.jpg")
    _, default = compare(stack, source, target)
    status, strict = compare(stack, source, target, targetFalseMatchRate=1e-4)
    assert status == 200, strict
    assert strict["thresholdSource"] == "TARGET_FALSE_MATCH_RATE" and strict["targetFalseMatchRate"] == 1e-4
    assert strict["threshold"] > default["threshold"]


def test_unmeasured_false_match_rate_is_422(stack: Stack) -> None:
    status, body = compare(
        stack, image_b64(PEOPLE / "obama.jpg"), image_b64(PEOPLE / "obama2.jpg"), targetFalseMatchRate=1e-9
    )
    assert status == 422 and body["code"] == "UNSUPPORTED_FALSE_MATCH_RATE"


def test_threshold_and_rate_together_are_refused(stack: Stack) -> None:
    status, body = compare(
        stack,
        image_b64(PEOPLE / "obama.jpg"),
        image_b64(PEOPLE / "obama2.jpg"),
        threshold=0.5,
        targetFalseMatchRate=1e-3,
    )
    assert status == 422 and body["code"] == "INVALID_REQUEST"


def test_quality_measures_are_returned(stack: Stack) -> None:
    status, body = compare(stack, image_b64(PEOPLE / "obama.jpg"), image_b64(PEOPLE / "obama2.jpg"))
    assert status == 200
    quality = body["sourceFace"]["quality"]
    assert quality["sizePx"] > 100 and quality["sharpness"] > 0 and 0 < quality["brightness"] < 255
    assert body["sourceFace"]["qualityIssues"] == []


def test_quality_filter_reports_small_faces_without_matching_them(stack: Stack) -> None:
    source = image_b64(PEOPLE / "obama.jpg")
    small = image_b64(PEOPLE / "obama-240p.jpg")  # a face of about 55 px: MEDIUM passes, HIGH (64 px) not
    status, medium = compare(stack, source, small, qualityFilter="MEDIUM")
    assert status == 200 and medium["match"] is True, medium
    status, high = compare(stack, source, small, qualityFilter="HIGH")
    assert status == 422 and high["code"] == "TARGET_FACES_BELOW_QUALITY" and "TOO_SMALL" in high["detail"]


def test_quality_filter_on_the_source_face(stack: Stack) -> None:
    blurred = image_b64(DATA_DIR / "faces" / "conditions" / "bulk__blur.jpg")
    status, body = compare(stack, blurred, image_b64(PEOPLE / "obama2.jpg"), qualityFilter="MEDIUM")
    assert status == 422 and body["code"] == "SOURCE_FACE_BELOW_QUALITY" and "BLURRY" in body["detail"]
