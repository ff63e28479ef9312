"""Messages round-trip through JSON, carry their envelope, and reject what they must."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

import contracts
from contracts import routing
from contracts.envelope import Command, Event, Message

ALL_MESSAGES = [
    getattr(contracts, name)
    for name in contracts.__all__
    if isinstance(getattr(contracts, name), type)
    and issubclass(getattr(contracts, name), Message)
    and getattr(contracts, name) not in (Message, Command, Event)
]


def test_every_required_message_exists() -> None:
    names = {cls.__name__ for cls in ALL_MESSAGES}
    assert names >= {
        "CompareFaces",
        "FacesCompared",
        "StartSession",
        "SessionStarted",
        "JoinCall",
        "FrameCaptured",
        "ChallengeIssued",
        "ChallengeVerdict",
        "LivenessDecided",
        "MatchReferences",
        "ReferencesMatched",
        "SessionFinished",
        "DeliverCallback",
        "CallbackDelivered",
    }


def test_every_message_is_either_a_command_or_an_event() -> None:
    for cls in ALL_MESSAGES:
        assert issubclass(cls, Command) != issubclass(cls, Event), cls


def test_compare_faces_round_trips_with_binary_image() -> None:
    image = bytes(range(256))
    command = contracts.CompareFaces(
        correlation_id="req-1",
        source=contracts.ImageData(inline=image),
        target=contracts.ImageData(storage_key="sessions/s1/frame-0001.jpg"),
        threshold=0.7,
    )
    again = contracts.CompareFaces.model_validate_json(command.model_dump_json())
    assert again == command
    assert again.source.inline == image
    assert len(again.message_id) == 32 and again.schema_version == 1
    assert again.occurred_at.tzinfo is not None


def test_message_ids_are_unique() -> None:
    ids = {contracts.SessionStarted(correlation_id="s", session_id="s").message_id for _ in range(100)}
    assert len(ids) == 100


def test_envelope_requires_correlation_id() -> None:
    with pytest.raises(ValidationError):
        contracts.SessionStarted(session_id="s")  # type: ignore[call-arg]


def test_image_data_needs_exactly_one_form() -> None:
    with pytest.raises(ValidationError):
        contracts.ImageData()
    with pytest.raises(ValidationError):
        contracts.ImageData(inline=b"x", storage_key="k")


def test_messages_are_immutable() -> None:
    event = contracts.SessionFinished(
        correlation_id="s", session_id="s", status=contracts.SessionStatus.FAILED
    )
    with pytest.raises(ValidationError):
        event.status = contracts.SessionStatus.SUCCEEDED  # type: ignore[misc]


def test_start_session_bounds_the_offer() -> None:
    common = {"correlation_id": "s", "session_id": "s", "connection_id": "c", "expires_at": datetime.now(UTC)}
    with pytest.raises(ValidationError):
        contracts.StartSession(**common, offer_sdp="v=0\r\n" * 20_000)
    ok = contracts.StartSession(**common, offer_sdp="v=0\r\n")
    assert ok.language == "en"
    assert ok.sequence_base == 0


def test_terminal_statuses() -> None:
    terminal = {status for status in contracts.SessionStatus if status.terminal}
    assert terminal == {
        contracts.SessionStatus.SUCCEEDED,
        contracts.SessionStatus.FAILED,
        contracts.SessionStatus.EXPIRED,
    }


def test_routes_have_distinct_queues_and_dead_letter_queues() -> None:
    queues = [route.queue for route in routing.ALL_ROUTES]
    assert len(set(queues)) == len(queues)
    assert all(route.dead_letter_queue == f"{route.queue}.dlq" for route in routing.ALL_ROUTES)
    assert routing.MATCHER_COMPARE.routing_key == routing.CommandKey.COMPARE_FACES
