"""Image validation and decoding with Pillow: cheap probing for the gateway, full decoding for workers.

Only JPEG, PNG and WEBP are accepted. Every Pillow error is translated into
:class:`~faces.errors.InvalidImageError` or :class:`~faces.errors.ImageTooLargeError`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from faces.errors import ImageTooLargeError, InvalidImageError

__all__ = ["SUPPORTED_FORMATS", "ImageInfo", "decode_image", "probe_image"]

SUPPORTED_FORMATS: Final[frozenset[str]] = frozenset({"JPEG", "PNG", "WEBP"})

_ORIENTATION_TAG: Final = 0x0112
_TRANSPOSED_ORIENTATIONS: Final = frozenset({5, 6, 7, 8})  # orientations that swap width and height
_SIXTEEN_BIT_MODES: Final = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_WHITE: Final = (255, 255, 255, 255)

#: Errors Pillow raises for broken data once the format is known.
_DECODE_ERRORS: Final = (OSError, SyntaxError, ValueError, EOFError)


@dataclass(frozen=True)
class ImageInfo:
    """Format and displayed size (after EXIF orientation) of an image, read from its header."""

    format: str
    width: int
    height: int


def probe_image(data: bytes, *, max_pixels: int) -> ImageInfo:
    """Check format and size from the header without decoding the pixels.

    Raises :class:`InvalidImageError` (empty, unknown or unsupported format, broken structure)
    or :class:`ImageTooLargeError` (``width * height > max_pixels``).
    """
    with _open(data, max_pixels=max_pixels) as image:
        fmt = str(image.format)
        width, height = image.size
        try:
            image.verify()  # structure and checksums, without decoding pixels
        except _DECODE_ERRORS as exc:
            raise InvalidImageError("corrupt", f"{fmt} image is corrupt: {exc}") from exc
    with _open(data, max_pixels=max_pixels) as image:  # verify() leaves the image unusable
        # A PNG's eXIf chunk may follow its pixels, and Pillow's getexif() decodes every pixel to
        # look for it (a 150 KB PNG of 40 Mpx: 0.4 s of CPU, 150 MB): only one read before them.
        header_exif = image.format != "PNG" or "exif" in image.info
        try:
            orientation = image.getexif().get(_ORIENTATION_TAG) if header_exif else None
        except _DECODE_ERRORS:
            orientation = None  # broken EXIF: decode_image ignores it too
    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return ImageInfo(format=fmt, width=width, height=height)


def decode_image(data: bytes, *, max_pixels: int) -> npt.NDArray[np.uint8]:
    """Decode to an ``H x W x 3`` uint8 **BGR** array, upright (EXIF orientation applied).

    Transparency is composited on white; palette, grey, CMYK and 16-bit images become RGB.
    """
    with _open(data, max_pixels=max_pixels) as image:
        try:
            image.load()
            rgb = _to_rgb(_upright(image))
        except Image.DecompressionBombError as exc:
            raise _too_large(image.size, max_pixels) from exc
        except _DECODE_ERRORS as exc:
            raise InvalidImageError("corrupt", f"{image.format} image is corrupt: {exc}") from exc
    array = np.asarray(rgb, dtype=np.uint8)
    return np.ascontiguousarray(array[:, :, ::-1])


def _open(data: bytes, *, max_pixels: int) -> Image.Image:
    if not data:
        raise InvalidImageError("empty", "no image data")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(max_pixels) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError("undecodable", "not a recognisable image") from exc
    except _DECODE_ERRORS as exc:
        raise InvalidImageError("corrupt", f"image header is corrupt: {exc}") from exc
    if image.format not in SUPPORTED_FORMATS:
        fmt = image.format
        image.close()
        raise InvalidImageError(
            "unsupported_format", f"{fmt} images are not supported; use one of {sorted(SUPPORTED_FORMATS)}"
        )
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise _too_large((width, height), max_pixels)
    return image


def _too_large(size: tuple[int, int], max_pixels: int) -> ImageTooLargeError:
    return ImageTooLargeError(max_pixels, width=size[0], height=size[1])


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; an unreadable EXIF block is ignored rather than fatal."""
    try:
        return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS:
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES:
        grey = np.asarray(image, dtype=np.float64)
        scaled = np.clip(np.rint(grey / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    has_alpha = mode in {"RGBA", "LA", "PA", "La", "RGBa"} or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
