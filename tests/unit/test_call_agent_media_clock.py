"""The media clock's lead over the agent's: a camera's stays under its first frame's delay; a
stream stamped faster than real time, or jumping ahead, builds a lead that a jump back keeps; a
new connection's lead is its own."""

from __future__ import annotations

import random

import pytest

from services.call_agent.media_clock import MediaClock

FPS = 30


def test_a_camera_never_leads_by_more_than_its_first_frames_delay() -> None:
    """Frames taken at 30 fps, each arriving 20-400 ms later (jitter), the first 1.5 s late (a
    decoder waiting for a key frame, a busy agent): the lead never passes that 1.5 s."""
    rng = random.Random(7)
    clock = MediaClock()
    leads = []
    for n in range(FPS * 60):
        taken = n / FPS
        delay = 1.5 if n == 0 else rng.uniform(0.02, 0.4)
        leads.append(clock.tick(10_000.0 + taken, 500.0 + taken + delay))
    assert max(lead for lead in leads if lead is not None) <= 1.5 - 0.02 + 1e-9


def test_a_stream_stamped_faster_than_real_time_leads_by_what_it_gained() -> None:
    clock = MediaClock()
    for n in range(8 * 10):  # 10 s at 8 frames a second, stamped at 1.5 media seconds each second
        lead = clock.tick(1.5 * n / 8, n / 8)
    assert lead == clock.most == pytest.approx(0.5 * 79 / 8)


def test_jumping_back_does_not_clear_the_lead_and_frames_without_time_tell_nothing() -> None:
    clock = MediaClock()
    clock.tick(0.0, 0.0)
    assert clock.tick(6.0, 0.1) == pytest.approx(5.9)  # six seconds of media in a tenth of a second
    assert clock.tick(0.0, 0.2) == pytest.approx(5.9)  # back to 0: a break, not counted
    assert clock.tick(0.1, 0.3) == pytest.approx(5.9)
    assert clock.tick(None, 0.4) is None


def test_a_new_connection_starts_its_own_lead_and_the_largest_is_remembered() -> None:
    """The liveness worker adds the connections' leads up (tests/unit/liveness/test_liveness_stream.py)."""
    clock = MediaClock()
    clock.tick(0.0, 0.0)
    assert clock.tick(4.0, 0.1) == pytest.approx(3.9)
    clock.restart()  # a new connection: its first frame follows none, its lead starts at 0
    assert clock.tick(90_000.0, 0.5) == 0.0
    assert clock.tick(90_001.0, 1.5) == 0.0
    assert clock.most == pytest.approx(3.9)
