"""`faceproof bench room`'s subject (and the call tests' one) reacts to the instruction once the
call agent's video shows it (FrameCaptured.shown), not when ChallengeIssued goes out: reacting to
the event, it moved before the frames that make the challenge's baseline whenever the agent lagged
behind the broker."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from faceproof.bench.room import _Flow, _on_event
from faceproof.testing.webrtc_subject import OnScreen


class Subject:
    def __init__(self) -> None:
        self.instructed: list[int] = []

    def instruct(self, message: dict[str, Any]) -> None:
        self.instructed.append(int(message["index"]))

    def next_frame(self) -> npt.NDArray[np.uint8]:
        return np.zeros((4, 4, 3), dtype=np.uint8)


def test_the_subject_answers_a_challenge_once_a_captured_frame_says_it_was_shown() -> None:
    flow, subject = _Flow(session_id="s"), Subject()
    screen = OnScreen(subject)

    def event(key: str, **body: Any) -> None:
        _on_event(flow, screen, key, {"session_id": "s", **body})

    event("challenge.issued", index=0, challenge="LOOK_DOWN")
    event("frame.captured", shown=-1)
    assert subject.instructed == []  # issued, but not yet in the agent's video
    event("frame.captured", shown=0)
    assert subject.instructed == [0]
    event("frame.captured", shown=0)
    event("challenge.issued", index=1, challenge="OPEN_MOUTH")
    assert subject.instructed == [0]
    _on_event(flow, screen, "frame.captured", {"session_id": "another", "shown": 1})
    assert subject.instructed == [0]  # another session's frame says nothing of this one
    event("frame.captured", shown=None)  # an agent that does not say: nothing released
    event("frame.captured", shown=1)
    assert subject.instructed == [0, 1]
    assert len(flow.frames) == 5


def test_an_instruction_already_shown_when_its_event_arrives_is_answered_at_once() -> None:
    subject = Subject()
    screen = OnScreen(subject)
    screen.seen(1)  # the agent's frame was read before the worker's event
    screen.instruct({"index": 0})
    screen.instruct({"index": 1})
    assert subject.instructed == [0, 1]
