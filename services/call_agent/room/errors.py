"""Why a call could not be run: a small hierarchy, each carrying the stable code of ``CallFailed``."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "CallAgentBusy",
    "FailureReason",
    "NoVideo",
    "RequestRejected",
    "RequestTimeout",
    "RoomError",
    "RoomRefused",
    "RoomUnreachable",
    "SignallingError",
    "SocketDropped",
    "SubjectLeft",
]


class FailureReason(StrEnum):
    """``CallFailed.reason``."""

    ROOM_UNREACHABLE = "ROOM_UNREACHABLE"
    ROOM_REFUSED = "ROOM_REFUSED"
    SIGNALLING_ERROR = "SIGNALLING_ERROR"
    SOCKET_DROPPED = "SOCKET_DROPPED"
    NO_VIDEO = "NO_VIDEO"
    SUBJECT_LEFT = "SUBJECT_LEFT"
    CALL_AGENT_BUSY = "CALL_AGENT_BUSY"


class RoomError(Exception):
    """A call cannot go on. ``detail`` is safe to log and publish (no URLs, tokens or media)."""

    reason: FailureReason = FailureReason.SIGNALLING_ERROR

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class RoomUnreachable(RoomError):
    """The WebSocket could not be opened (DNS, refused, TLS, handshake, bad URL)."""

    reason = FailureReason.ROOM_UNREACHABLE


class RoomRefused(RoomError):
    """The room URL may not be opened: the address policy of infra/safe_fetch.py (scheme,
    credentials, a private address that is not allow-listed, a redirect to one)."""

    reason = FailureReason.ROOM_REFUSED


class SignallingError(RoomError):
    """The room answered something we cannot work with (or a media transport failed)."""

    reason = FailureReason.SIGNALLING_ERROR


class RequestTimeout(SignallingError):
    """A protoo request got no response in time."""


class RequestRejected(SignallingError):
    """A protoo request was answered with ``ok: false``."""

    def __init__(self, method: str, code: int, reason: str) -> None:
        super().__init__(f"{method} rejected ({code}: {reason[:200]})")
        self.method = method
        self.code = code


class SocketDropped(RoomError):
    """The signalling WebSocket closed while the call was running."""

    reason = FailureReason.SOCKET_DROPPED


class NoVideo(RoomError):
    """No video frame of the subject arrived in time."""

    reason = FailureReason.NO_VIDEO


class SubjectLeft(RoomError):
    """The subject's video stopped during the session and did not come back in time."""

    reason = FailureReason.SUBJECT_LEFT


class CallAgentBusy(RoomError):
    """The call agent that took the JoinCall holds FACEPROOF_MAX_CONCURRENT_CALLS connections."""

    reason = FailureReason.CALL_AGENT_BUSY
