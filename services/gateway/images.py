"""Turn an image field of a request (base64 or data URL) into checked bytes."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re

from faces.errors import ImageTooLargeError, InvalidImageError
from faces.images import probe_image
from services.gateway.problems import ProblemError

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w-]+=[^;,]*)*;base64,", re.IGNORECASE)


async def read_image_field(value: str, *, field: str, max_bytes: int, max_pixels: int) -> bytes:
    """:func:`decode_image_field` in a worker thread: base64 of up to ``max_bytes`` and the image
    header checks take tens of milliseconds, which the event loop (every other request) must not wait."""
    return await asyncio.to_thread(
        decode_image_field, value, field=field, max_bytes=max_bytes, max_pixels=max_pixels
    )


def decode_image_field(value: str, *, field: str, max_bytes: int, max_pixels: int) -> bytes:
    """Decode ``value`` and check it is a JPEG, PNG or WebP within the byte and pixel limits."""
    payload = "".join(_DATA_URL.sub("", value, count=1).split())  # no whitespace (str.split: C speed)
    if len(payload) > 4 * -(-max_bytes // 3):
        raise _too_large(field, max_bytes)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        try:  # base64url, as some clients send
            data = base64.b64decode(payload, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise ProblemError(
                400, "Invalid image", f"'{field}' is not base64 or a base64 data URL.", code="INVALID_BASE64"
            ) from None
    if not data:
        raise ProblemError(400, "Invalid image", f"'{field}' is empty.", code="INVALID_BASE64")
    if len(data) > max_bytes:
        raise _too_large(field, max_bytes)
    try:
        probe_image(data, max_pixels=max_pixels)
    except ImageTooLargeError:
        raise ProblemError(
            413,
            "Image too large",
            f"'{field}' has more than {max_pixels} pixels.",
            code="IMAGE_TOO_MANY_PIXELS",
        ) from None
    except InvalidImageError as error:
        raise ProblemError(
            400,
            "Invalid image",
            f"'{field}' is not a JPEG, PNG or WebP image ({error}).",
            code="INVALID_IMAGE",
        ) from None
    return data


def _too_large(field: str, max_bytes: int) -> ProblemError:
    return ProblemError(
        413, "Image too large", f"'{field}' is over {max_bytes} bytes.", code="IMAGE_TOO_LARGE"
    )
