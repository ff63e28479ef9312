"""JSON nested too deep to parse, from a server a caller names: the controller's reference list
and a room's protoo message. ``json.loads`` raises RecursionError (not a ValueError) there; it
must be "not JSON" like any other bad body, not an exception that escapes the handler (the
notifier's would be redelivered until dead-lettered, and the flow end at its deadline with the
wrong reason)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from infra.safe_fetch import FetchPolicy
from services.call_agent.room.protoo import ProtooClient
from services.notifier.adapters import SafeReferenceSource
from services.notifier.ports import ReferencesUnavailable
from tests.support.static_server import serving

DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture
def deep_list_server() -> Iterator[str]:
    with serving(DEEP, "application/json") as server:
        yield server.url


async def test_a_reference_list_nested_too_deep_is_not_json(deep_list_server: str) -> None:
    source = SafeReferenceSource(FetchPolicy.create("127.0.0.1", timeout_s=20), max_references=10)
    flow = SimpleNamespace(callback_base_url=deep_list_server, token="t", datastore_base_url=None)
    with pytest.raises(ReferencesUnavailable, match="the reference list is not JSON"):
        await source.fetch(flow)  # type: ignore[arg-type]


def test_a_room_message_nested_too_deep_or_with_a_huge_number_is_ignored() -> None:
    """(An integer of over 4,300 digits is a plain ValueError in json.loads, not a JSONDecodeError.)"""
    client = ProtooClient(policy=FetchPolicy(), request_timeout_s=1.0)
    client._dispatch(DEEP)  # logged and dropped, as any message that is not JSON
    client._dispatch(DEEP.decode())
    client._dispatch('{"notification": true, "method": "x", "data": {"n": ' + "9" * 5000 + "}}")
