"""Compare real photos through gateway → RabbitMQ → matcher process → back, as a user would."""

from __future__ import annotations

import base64

import pytest

from tests.e2e.conftest import Stack, image_b64
from tests.paths import DATA_DIR, PEOPLE

pytestmark = pytest.mark.e2e


def compare(stack: Stack, source: str, target: str, **extra: object) -> tuple[int, dict[str, object]]:
    with stack.client() as client:
        response = client.post("/v1/compare", json={"source": source, "target": target, **extra})
    return response.status_code, response.json()


def test_same_person_matches(stack: Stack) -> None:
    status, body = compare(stack, image_b64(PEOPLE / "obama.jpg"), image_b64(PEOPLE / "obama2.jpg"))
    assert status == 200, body
    assert body["match"] is True
    assert body["similarity"] >= body["threshold"]
    assert 0 <= body["similarity"] <= 1
    assert len(body["targetFaces"]) == 1
    assert body["model"]["pack"] == "permissive" and body["model"]["commercialUse"] is True


def test_different_people_do_not_match(stack: Stack) -> None:
    status, body = compare(stack, image_b64(PEOPLE / "obama.jpg"), image_b64(PEOPLE / "biden.jpg"))
    assert status == 200, body
    assert body["match"] is False
    assert body["similarity"] < body["threshold"]


def test_group_photo_scores_every_face(stack: Stack) -> None:
    data_url = "data:image/jpeg;base64," + image_b64(PEOPLE / "knn_test__obama_and_biden.jpg")
    status, body = compare(stack, image_b64(PEOPLE / "obama.jpg"), data_url)
    assert status == 200, body
    faces = body["targetFaces"]
    assert len(faces) == 3
    assert sum(face["match"] for face in faces) == 1
    assert body["similarity"] == max(face["similarity"] for face in faces)
    x1, y1, x2, y2 = body["sourceFace"]["box"]
    assert x2 > x1 and y2 > y1


def test_png_and_webp_are_accepted(stack: Stack) -> None:
    status, body = compare(stack, image_b64(PEOPLE / "tests_32bit.png"), image_b64(PEOPLE / "obama2.jpg"))
    assert status == 200 and body["match"] is True, body


def test_no_face_is_422_with_a_reason(stack: Stack) -> None:
    status, body = compare(
        stack, image_b64(PEOPLE / "obama.jpg"), image_b64(DATA_DIR / "faces" / "negative" / "bulk__view.jpg")
    )
    assert status == 422
    assert body["code"] == "NO_FACE_IN_TARGET" and body["status"] == 422


def test_seed_compare_route(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post(
            "/compare",
            json={
                "source": image_b64(PEOPLE / "biden.jpg"),
                "target": image_b64(PEOPLE / "knn_train__biden__biden2.jpg"),
            },
        )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"comparisonResult"} and 0.5 < body["comparisonResult"] <= 1


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_bad_token_is_401(stack: Stack, token: str | None) -> None:
    with stack.client(token) as client:
        response = client.post("/v1/compare", json={"source": "x", "target": "y"})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")


def test_corrupt_image_is_400(stack: Stack) -> None:
    truncated = (PEOPLE / "obama.jpg").read_bytes()[:3000]
    status, body = compare(stack, base64.b64encode(truncated).decode(), image_b64(PEOPLE / "obama2.jpg"))
    assert status == 400, body
    assert body["code"] == "INVALID_IMAGE"


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("this is not base64!", "INVALID_BASE64"),
        (base64.b64encode(b"GIF89a not really an image").decode(), "INVALID_IMAGE"),
        (base64.b64encode(b"\x00" * 100).decode(), "INVALID_IMAGE"),
    ],
)
def test_bad_images_are_400(stack: Stack, source: str, code: str) -> None:
    status, body = compare(stack, source, image_b64(PEOPLE / "obama2.jpg"))
    assert status == 400 and body["code"] == code


def test_malformed_json_is_400(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post(
            "/v1/compare", content=b'{"source": ', headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json()["code"] == "MALFORMED_JSON"


def test_missing_field_is_422(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post("/v1/compare", json={"source": image_b64(PEOPLE / "obama.jpg")})
    assert response.status_code == 422 and response.json()["code"] == "INVALID_REQUEST"


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` pixels but carries almost no data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00"))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_413(stack: Stack) -> None:
    bomb = base64.b64encode(_png_header(30_000, 30_000)).decode()
    status, body = compare(stack, bomb, image_b64(PEOPLE / "obama2.jpg"))
    assert status == 413 and body["code"] == "IMAGE_TOO_MANY_PIXELS"


def test_image_over_the_byte_limit_is_413(stack: Stack) -> None:
    huge = base64.b64encode(b"\xff\xd8\xff" + b"\x00" * (11 * 1024 * 1024)).decode()
    status, body = compare(stack, huge, image_b64(PEOPLE / "obama2.jpg"))
    assert status == 413 and body["code"] == "IMAGE_TOO_LARGE"


def test_body_over_the_request_limit_is_413(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post(
            "/v1/compare", content=b"x" * (33 * 1024 * 1024), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413 and response.json()["code"] == "BODY_TOO_LARGE"


def test_two_images_each_under_the_limit_but_together_too_large_for_one_message_are_413(stack: Stack) -> None:
    """Two photos of 7 MiB each (under the 10 MiB image limit) are over what one broker message may
    carry once base64-encoded (RabbitMQ 4 refuses bodies over 16 MiB by default): a 413 that says
    so, rather than a 503 on every retry."""
    big = image_b64(PEOPLE / "obama.jpg")
    padded = base64.b64encode(base64.b64decode(big) + b"\x00" * (7 * 1024 * 1024)).decode()  # after EOI
    status, body = compare(stack, padded, padded)
    assert status == 413 and body["code"] == "IMAGE_TOO_LARGE", body
    assert "Together the images are over 16,711,680 bytes once base64-encoded" in str(body["detail"])
    status, body = compare(stack, padded, image_b64(PEOPLE / "obama2.jpg"))  # one of them fits
    assert status == 200 and body["match"] is True, body
