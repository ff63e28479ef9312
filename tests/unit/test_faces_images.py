from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from faces.errors import ImageTooLargeError, InvalidImageError
from faces.images import SUPPORTED_FORMATS, decode_image, probe_image
from tests.faces_support import FACES_DATA

LIMIT = 40_000_000


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few bytes whose header declares width x height pixels."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_supported_formats() -> None:
    assert {"JPEG", "PNG", "WEBP"} == SUPPORTED_FORMATS


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_decode_returns_bgr_uint8(fmt: str) -> None:
    image = Image.new("RGB", (30, 20), (200, 10, 50))  # red-ish in RGB
    decoded = decode_image(
        encode(image, fmt, quality=100) if fmt != "PNG" else encode(image, fmt), max_pixels=LIMIT
    )
    assert decoded.shape == (20, 30, 3)
    assert decoded.dtype == np.uint8
    assert decoded.flags.c_contiguous
    blue, green, red = decoded[10, 15].astype(int)
    assert red > 180 and blue < 80 and green < 40
    assert probe_image(encode(image, fmt), max_pixels=LIMIT).format == fmt


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs 90 degrees clockwise
    data = encode(image, "JPEG", exif=exif, quality=95)

    decoded = decode_image(data, max_pixels=LIMIT)
    assert decoded.shape == (40, 20, 3)  # now portrait
    top, bottom = decoded[5, 10].astype(int), decoded[35, 10].astype(int)
    assert top[2] > 200 and top[0] < 60  # the red half went to the top (BGR: red is channel 2)
    assert bottom[0] > 200 and bottom[2] < 60
    info = probe_image(data, max_pixels=LIMIT)
    assert (info.format, info.width, info.height) == ("JPEG", 20, 40)


def test_rgba_png_from_the_data_set() -> None:
    data = (FACES_DATA / "people" / "tests_32bit.png").read_bytes()
    assert Image.open(io.BytesIO(data)).mode == "RGBA"
    decoded = decode_image(data, max_pixels=LIMIT)
    info = probe_image(data, max_pixels=LIMIT)
    assert decoded.shape == (info.height, info.width, 3)
    assert decoded.dtype == np.uint8


def test_transparency_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (0, 0, 5, 10))
    decoded = decode_image(encode(rgba, "PNG"), max_pixels=LIMIT)
    assert decoded[5, 8].tolist() == [255, 255, 255]
    assert decoded[5, 2].tolist() == [0, 0, 0]

    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([10, 20, 30] * 256)
    decoded = decode_image(encode(palette, "PNG", transparency=0), max_pixels=LIMIT)
    assert decoded[0, 0].tolist() == [255, 255, 255]


def test_grey_cmyk_and_16_bit_become_bgr() -> None:
    grey = decode_image(encode(Image.new("L", (8, 8), 77), "PNG"), max_pixels=LIMIT)
    assert grey[0, 0].tolist() == [77, 77, 77]
    cmyk = decode_image(encode(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "JPEG"), max_pixels=LIMIT)
    assert cmyk.shape == (8, 8, 3) and cmyk.min() > 240
    sixteen = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    decoded = decode_image(encode(sixteen, "PNG"), max_pixels=LIMIT)
    assert decoded[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"definitely not an image", "undecodable"),
        (encode(Image.new("RGB", (8, 8)), "GIF"), "unsupported_format"),
        (encode(Image.new("RGB", (8, 8)), "BMP"), "unsupported_format"),
    ],
)
def test_rejected_bytes(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidImageError) as decode_error:
        decode_image(data, max_pixels=LIMIT)
    assert decode_error.value.reason == reason
    with pytest.raises(InvalidImageError) as probe_error:
        probe_image(data, max_pixels=LIMIT)
    assert probe_error.value.reason == reason


def test_truncated_jpeg_is_corrupt() -> None:
    data = (FACES_DATA / "people" / "obama_small.jpg").read_bytes()
    with pytest.raises(InvalidImageError) as error:
        decode_image(data[: len(data) // 2], max_pixels=LIMIT)
    assert error.value.reason == "corrupt"


def test_decompression_bomb_is_refused_without_decoding() -> None:
    bomb = png_declaring(20_000, 20_000)
    assert len(bomb) < 200
    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError):
        probe_image(bomb, max_pixels=LIMIT)
    with pytest.raises(ImageTooLargeError):
        decode_image(bomb, max_pixels=LIMIT)
    assert time.perf_counter() - started < 1.0


def test_our_pixel_limit_is_checked_before_decoding() -> None:
    data = png_declaring(5_000, 4_000)
    with pytest.raises(ImageTooLargeError) as error:
        decode_image(data, max_pixels=1_000_000)
    assert (error.value.width, error.value.height) == (5_000, 4_000)
    with pytest.raises(ImageTooLargeError):
        probe_image(data, max_pixels=1_000_000)
    assert probe_image(encode(Image.new("RGB", (100, 10)), "PNG"), max_pixels=1_000).width == 100


def test_probing_a_large_png_decodes_none_of_its_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow's getexif() on a PNG decoded every pixel looking for an eXIf chunk after them: a
    # 6320x6320 PNG of 150 KB cost the gateway 0.4 s of CPU and 150 MB per image in the probe.
    data = encode(Image.new("RGBA", (6320, 6320)), "PNG")
    assert len(data) < 400_000
    loads: list[str] = []
    real_load = Image.Image.load

    def counted(image: Image.Image) -> object:
        loads.append(str(image.format))
        return real_load(image)

    monkeypatch.setattr(Image.Image, "load", counted)
    monkeypatch.setattr("PIL.PngImagePlugin.PngImageFile.load", counted, raising=False)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", counted)
    info = probe_image(data, max_pixels=LIMIT)
    assert (info.format, info.width, info.height) == ("PNG", 6320, 6320)
    assert loads == []
    # an eXIf chunk before the pixels is still read: a PNG turned by its orientation tag
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    turned = encode(Image.new("RGB", (40, 10)), "PNG", exif=exif.tobytes())
    shown = probe_image(turned, max_pixels=LIMIT)
    assert (shown.width, shown.height) == (10, 40)
