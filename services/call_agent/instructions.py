"""What the user is asked to do now: session events -> the screen to draw and the data channel JSON.

Pure: the call agent feeds events and the monotonic clock in, and reads :class:`Screen` (for the
instruction video) and the camelCase messages (for the ``faceproof`` data channel) out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from contracts.events import (
    ChallengeIssued,
    ChallengeVerdict,
    LivenessDecided,
    ReadinessChecked,
    SessionFinished,
)
from contracts.values import ChallengeType, SessionStatus
from services.call_agent.catalog import Catalog

__all__ = ["HIDDEN_REASONS", "NOTICE_S", "Instructions", "Notice", "Screen", "shown_reasons"]

#: How long a verdict ("Well done!") stays on screen beside the next instruction.
NOTICE_S = 1.5

#: Reasons the browser is never told: which detector caught a replay, a deepfake or a still. Told,
#: someone presenting one learns what to defeat and tries again; the app reads them from the API.
#: What a user can act on (too dark, too far, time is up, a virtual camera, another person in the
#: picture) is still shown. None of these is a challenge's verdict: a verdict's reason left out
#: would name it as surely as the reason itself.
HIDDEN_REASONS = frozenset({"SPOOF_SUSPECTED", "FROZEN_STREAM", "MEDIA_CLOCK_AHEAD"})


def shown_reasons(reasons: list[str]) -> list[str]:
    """The reasons the browser may see (data channel, instruction video), in their order."""
    return [reason for reason in reasons if reason not in HIDDEN_REASONS]


Message = dict[str, Any]


@dataclass(frozen=True)
class Notice:
    text: str
    good: bool
    until: float


@dataclass(frozen=True)
class Screen:
    """The instruction video's overlay. ``deadline`` is on the monotonic clock; ``index`` is 0-based;
    ``target`` is in the mirrored view (0..1); ``final`` draws the closing status screen."""

    text: str
    challenge: ChallengeType | None = None
    index: int | None = None
    count: int | None = None
    deadline: float | None = None
    target: tuple[float, float] | None = None
    notice: Notice | None = None
    final: bool = False
    succeeded: bool | None = None
    detail: str | None = None

    def seconds_left(self, now: float) -> int | None:
        if self.deadline is None:
            return None
        return max(0, int(-(-(self.deadline - now) // 1)))

    def progress(self) -> str | None:
        if self.index is None or self.count is None:
            return None
        return f"{min(self.index + 1, self.count)}/{self.count}"


class Instructions:
    """The current screen of one session and the messages to send for each event."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.screen = Screen(text=catalog.text("status.waiting"))
        self._index = -1
        self._current: ChallengeIssued | None = None
        self.finished = False
        #: The highest challenge index drawn into a frame of the outgoing video (-1: none yet).
        self.shown = -1
        #: While the challenges run: what the worker says refuses the subject's frames (None:
        #: nothing); it stays beside every instruction until the worker says it changed.
        self._hint: Notice | None = None

    def rendered(self, screen: Screen) -> None:
        """The instruction video sent a frame drawn with ``screen`` (FrameCaptured.shown)."""
        if screen.challenge is not None and screen.index is not None and screen.index > self.shown:
            self.shown = screen.index

    def guidance(self, event: ReadinessChecked, now: float) -> Message | None:
        """Get ready (before the first challenge): "Get ready" and the most important problem, or
        "Look at the camera" (green) when nothing is wrong. While the challenges run (the worker
        counts none of the frames it refuses, and the clock runs on): the most important problem
        beside the instruction, until the worker says it is fixed (empty ``text`` then)."""
        if self.finished:
            return None
        hints = [self.catalog.text(f"guidance.{p}") for p in event.problems]
        if self._index >= 0:
            before, self._hint = self._hint, Notice(hints[0], False, math.inf) if hints else None
            if self._hint is not None:
                self.screen = replace(self.screen, notice=self._hint)
            elif before is not None and self.screen.notice == before:
                self.screen = replace(self.screen, notice=None)
            return {"type": "guidance", "problems": list(event.problems), "text": hints[0] if hints else ""}
        shown = hints[0] if hints else self.catalog.text("status.waiting")
        self.screen = Screen(
            text=self.catalog.text("status.get_ready"), notice=Notice(shown, not hints, math.inf)
        )
        return {"type": "guidance", "problems": list(event.problems), "text": shown}

    def challenge(self, event: ChallengeIssued, now: float) -> Message | None:
        if self.finished or event.index < self._index:
            return None
        first = self._index < 0
        self._index = event.index
        self._current = event
        text = self.catalog.challenge(event.challenge)
        notice = (
            self.screen.notice
            if not first and self.screen.notice is not None and self.screen.notice.until > now
            else None  # (the first challenge replaces the "get ready" hint)
        )
        if self._hint is not None:  # what still refuses the subject's frames comes first
            notice = self._hint
        self.screen = Screen(
            text=text,
            challenge=event.challenge,
            index=event.index,
            count=event.count,
            deadline=now + event.deadline_ms / 1000,
            target=event.target,
            notice=notice,
        )
        return {
            "type": "challenge",
            "index": event.index,
            "count": event.count,
            "challenge": event.challenge.value,
            "text": text,
            "deadlineMs": event.deadline_ms,
            "target": list(event.target) if event.target is not None else None,
        }

    def reshow(self, now: float) -> Message | None:
        """The subject came back (a reconnect): the current challenge again, with its full time."""
        current = self._current
        if current is None or self.screen.challenge is None:
            return None
        return self.challenge(current, now)

    def verdict(self, event: ChallengeVerdict, now: float) -> Message | None:
        if self.finished or event.index < self._index:
            return None
        text = self.catalog.text("verdict.passed" if event.passed else "verdict.failed")
        reason = event.reason if event.reason not in HIDDEN_REASONS else None
        reason_text = self.catalog.reason(reason)
        shown = text if event.passed or reason_text is None else f"{text}: {reason_text}"
        notice = Notice(shown, event.passed, now + NOTICE_S)
        if event.index == self._index:
            # The challenge is over: no countdown, no arrow, until the next one arrives.
            self.screen = Screen(
                text=self.catalog.text("status.checking")
                if event.index + 1 >= event.count
                else self.catalog.text("status.waiting"),
                index=event.index,
                count=event.count,
                notice=notice,
            )
        else:
            self.screen = replace(self.screen, notice=notice)
        return {
            "type": "verdict",
            "index": event.index,
            "count": event.count,
            "challenge": event.challenge.value,
            "passed": event.passed,
            "reason": reason,
            "text": shown,
        }

    def decided(self, event: LivenessDecided, now: float) -> Message | None:
        if self.finished:
            return None
        text = self.catalog.text("status.checking")
        self.screen = replace(self.screen, text=text, challenge=None, deadline=None, target=None)
        return {"type": "decided", "isLive": event.is_live, "text": text}

    def finish(self, status: SessionStatus, reasons: list[str]) -> Message | None:
        if self.finished:
            return None
        self.finished = True
        text = self.catalog.finished(status)
        reasons = shown_reasons(reasons)
        details = [t for t in (self.catalog.reason(r) for r in reasons) if t is not None]
        detail = details[0] if details and status is SessionStatus.FAILED else None
        self.screen = Screen(
            text=text, final=True, succeeded=status is SessionStatus.SUCCEEDED, detail=detail
        )
        return {
            "type": "finished",
            "status": status.value,
            "reasons": list(reasons),
            "text": text,
            "detail": detail,
        }

    def session_finished(self, event: SessionFinished) -> Message | None:
        return self.finish(event.status, event.reasons)
