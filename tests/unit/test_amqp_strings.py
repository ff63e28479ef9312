"""AMQP properties that are not UTF-8, decoded as a consumer of this project decodes them."""

from __future__ import annotations

import pytest
from pamqp import commands, frame, header

from infra.amqp_strings import UNDECODABLE, UNDECODABLE_HEADERS, tolerate_undecodable_strings


def content_header(**properties: object) -> bytes:
    """The wire bytes of a content header frame carrying ``properties``."""
    return frame.marshal(header.ContentHeader(0, 4, commands.Basic.Properties(**properties)), 1)  # type: ignore[arg-type]


def corrupted(wire: bytes, placeholder: bytes, replacement: bytes) -> bytes:
    assert len(placeholder) == len(replacement) and wire.count(placeholder) == 1
    return wire.replace(placeholder, replacement)


def test_a_message_id_that_is_not_utf8_is_decoded_with_a_replacement_character() -> None:
    tolerate_undecodable_strings()
    wire = corrupted(
        content_header(message_id="PLACEHOLDER", user_id="acme"), b"PLACEHOLDER", b"\xff\xfe-bad-bad!"
    )
    _, _, decoded = frame.unmarshal(wire)
    assert isinstance(decoded, header.ContentHeader)
    assert decoded.properties.message_id == f"{UNDECODABLE}{UNDECODABLE}-bad-bad!"
    assert decoded.properties.user_id == "acme"  # the other properties are intact


def test_a_header_name_that_is_not_utf8_leaves_only_the_marker() -> None:
    tolerate_undecodable_strings()
    wire = corrupted(
        content_header(message_id="m-1", headers={"x-schema-version": "1", "PLACEHOLDER": "v"}),
        b"PLACEHOLDER",
        b"\xffLACEHOLDER",
    )
    _, _, decoded = frame.unmarshal(wire)
    assert isinstance(decoded, header.ContentHeader)
    assert decoded.properties.headers == {UNDECODABLE_HEADERS: True}
    assert decoded.properties.message_id == "m-1"  # decoding went on past the table


@pytest.mark.parametrize(
    "properties",
    [
        {"message_id": "m-1", "correlation_id": "c", "reply_to": "upstream.acme.replies"},
        {"message_id": "ünïcödé ✓", "headers": {"x-schema-version": "1", "nested": {"ключ": 1}}},
    ],
)
def test_valid_properties_decode_exactly_as_before(properties: dict[str, object]) -> None:
    tolerate_undecodable_strings()
    _, _, decoded = frame.unmarshal(content_header(**properties))
    assert isinstance(decoded, header.ContentHeader)
    for name, value in properties.items():
        assert getattr(decoded.properties, name) == value
