"""The real mediasoup room server as a pytest fixture, for every layer that runs calls through it
(tests/integration and tests/e2e import ``room_server`` into their conftest).

The room server itself is faceproof/testing/mediasoup_room.py's (tests/support/sfu/room.js, built
by scripts/mediasoup.sh); this module only decides what a test does when it cannot be built."""

from __future__ import annotations

import pytest

from faceproof.testing.mediasoup_room import room_server_ready

__all__ = ["room_server"]


@pytest.fixture(scope="session")
def room_server() -> None:
    """The real mediasoup room server (scripts/mediasoup.sh, cached per machine; the first build
    takes ~7-13 min): a test that needs it skips only when that build fails, with its error."""
    error = room_server_ready()
    if error is not None:
        print(error)
        pytest.skip(f"the mediasoup room server could not be built: {error[-500:]}")
