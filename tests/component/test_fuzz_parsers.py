"""Property-based fuzzing of image decoding and message parsing: random or mutated input raises
only the documented errors (never a crash, never another exception)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import BaseModel, ValidationError

from contracts import commands, events
from faces.errors import ImageTooLargeError, InvalidImageError
from faces.images import decode_image, probe_image
from services.intake.errors import InvalidInput, TooLarge
from services.intake.images import decode_image_field

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_PIXELS = 1_000_000


def _seed(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 120, 40)).save(out, format=fmt)
    return out.getvalue()


SEEDS = [_seed("JPEG"), _seed("PNG"), _seed("WEBP")]


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A valid image with bytes flipped, cut or spliced: the decoder's hard cases."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    cut = draw(st.integers(1, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=64))


images = st.one_of(st.binary(max_size=2048), mutated_images())


@FUZZ
@given(images)
def test_image_decoding_raises_only_documented_errors(data: bytes) -> None:
    try:
        probe_image(data, max_pixels=MAX_PIXELS)
        decoded = decode_image(data, max_pixels=MAX_PIXELS)
    except (InvalidImageError, ImageTooLargeError):
        return
    assert decoded.ndim == 3 and decoded.shape[2] == 3


@FUZZ
@given(st.one_of(st.text(max_size=512), images.map(lambda b: base64.b64encode(b).decode())))
def test_image_fields_answer_a_problem_or_bytes(value: str) -> None:
    try:
        data = decode_image_field(value, field="source", max_bytes=64 * 1024, max_pixels=MAX_PIXELS)
    except (InvalidInput, TooLarge):  # 400, 413 over HTTP; a rejection on the broker
        return
    assert data


MODELS = sorted(
    {
        model
        for module in (commands, events)
        for model in vars(module).values()
        if isinstance(model, type) and issubclass(model, BaseModel) and model.__module__ == module.__name__
    },
    key=lambda model: model.__name__,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@FUZZ
@given(raw=st.one_of(st.binary(max_size=256), json_values.map(lambda v: json.dumps(v).encode())))
def test_message_parsing_raises_only_validation_errors(model: Any, raw: bytes) -> None:
    with contextlib.suppress(ValidationError):
        model.model_validate_json(raw)


def test_there_are_messages_to_fuzz() -> None:
    assert len(MODELS) >= 10
