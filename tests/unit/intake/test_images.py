"""Image fields (services/intake/images.py): each refusal has its class and code."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from services.intake import errors
from services.intake.images import DECODE_IN_THREAD_ABOVE_CHARS, decode_image_field, read_image_field
from tests.unit.intake.fakes import jpeg


def _decode(value: str, max_bytes: int = 64 * 1024, max_pixels: int = 1_000_000) -> bytes:
    return decode_image_field(value, field="source", max_bytes=max_bytes, max_pixels=max_pixels)


def test_base64_base64url_and_data_urls_decode_to_the_image() -> None:
    data = jpeg()
    assert _decode(base64.b64encode(data).decode()) == data
    assert _decode(base64.urlsafe_b64encode(data).decode()) == data
    assert _decode("data:image/jpeg;base64," + base64.b64encode(data).decode()) == data


@pytest.mark.parametrize(
    ("value", "kind", "code"),
    [
        ("%%%", errors.InvalidInput, "INVALID_BASE64"),
        ("", errors.InvalidInput, "INVALID_BASE64"),
        (base64.b64encode(b"hello, not an image").decode(), errors.InvalidInput, "INVALID_IMAGE"),
        (base64.b64encode(b"x" * 70_000).decode(), errors.TooLarge, "IMAGE_TOO_LARGE"),
        (base64.b64encode(jpeg(1200, 1000)).decode(), errors.TooLarge, "IMAGE_TOO_MANY_PIXELS"),
    ],
)
def test_refused_fields_name_the_field_and_the_code(
    value: str, kind: type[errors.IntakeError], code: str
) -> None:
    with pytest.raises(kind) as refused:
        _decode(value)
    assert refused.value.code == code and "'source'" in refused.value.detail


def _noise_jpeg(size: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
        out, format="JPEG", quality=95
    )
    return out.getvalue()


@pytest.mark.parametrize(
    "data", [jpeg(), _noise_jpeg(160)], ids=["short field, on the loop", "long, in a thread"]
)
async def test_the_async_reader_decodes_short_and_long_fields_alike(data: bytes) -> None:
    value = base64.b64encode(data).decode()
    assert (len(value) > DECODE_IN_THREAD_ABOVE_CHARS) == (len(data) > 1000)
    assert await read_image_field(value, field="target", max_bytes=len(data), max_pixels=1_000_000) == data
    with pytest.raises(errors.TooLarge) as refused:
        await read_image_field(value, field="target", max_bytes=len(data) - 1, max_pixels=1_000_000)
    assert refused.value.code == "IMAGE_TOO_LARGE" and "'target'" in refused.value.detail
