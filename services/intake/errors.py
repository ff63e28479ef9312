"""What the intake use cases refuse with: a small hierarchy that each door translates once.

The HTTP gateway answers problem+json (``services.gateway.problems``: the class gives the status,
the instance the code, title and detail, ``retry_after_s`` the ``Retry-After`` header); the broker
ingress answers ``CommandRejected`` with the code as reason (``services.ingress.handlers``), except
for :class:`Unavailable`, which is retryable: the command is nacked and delivered again.

=====================  ======  ==========================================================
class                  HTTP    codes
=====================  ======  ==========================================================
:class:`InvalidInput`  400     ``INVALID_BASE64``, ``INVALID_IMAGE``
:class:`TooLarge`      413     ``IMAGE_TOO_LARGE``, ``IMAGE_TOO_MANY_PIXELS``
:class:`Refused`       422     ``REFERENCE_URL_REFUSED``, ``REFERENCE_FETCH_FAILED``,
                               ``REFERENCE_NOT_AN_IMAGE``, ``ROOM_REFUSED``
:class:`LockedOut`     429     ``SUBJECT_LOCKED_OUT`` (with the seconds to wait)
:class:`Unavailable`   503     ``STORAGE_UNAVAILABLE``, ``BROKER_UNAVAILABLE`` (retryable)
=====================  ======  ==========================================================
"""

from __future__ import annotations

from typing import ClassVar, Final

__all__ = [
    "RETRY_AFTER_S",
    "IntakeError",
    "InvalidInput",
    "LockedOut",
    "Refused",
    "TooLarge",
    "Unavailable",
    "broker_unavailable",
]

#: Seconds after which a request refused for a dependency that was down may be tried again.
RETRY_AFTER_S: Final = 5


class IntakeError(Exception):
    """A request the intake refuses: a stable ``code``, a short ``title``, a ``detail`` for the
    caller (never an image or a secret), and the seconds after which a retry may succeed."""

    #: Whether the same request may succeed later unchanged (a dependency was down).
    retryable: ClassVar[bool] = False

    def __init__(self, code: str, title: str, detail: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.title = title
        self.detail = detail
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.detail!r})"


class InvalidInput(IntakeError):
    """A field is not what it must be (not base64, not an image)."""


class TooLarge(IntakeError):
    """A field is over a byte or pixel limit."""


class Refused(IntakeError):
    """Well-formed, but refused: a URL the address policy refuses, a reference that cannot be fetched."""


class LockedOut(IntakeError):
    """The subject or device failed too often; ``retry_after_s`` says when the cool-down ends."""


class Unavailable(IntakeError):
    """A dependency (object store, broker) cannot be reached: retry later."""

    retryable: ClassVar[bool] = True


def broker_unavailable() -> Unavailable:
    """The message broker cannot be reached (a command or request could not be sent): the JoinCall
    of a call's start, and the gateway's compare and offer."""
    return Unavailable(
        "BROKER_UNAVAILABLE",
        "Service unavailable",
        "The message broker cannot be reached.",
        retry_after_s=RETRY_AFTER_S,
    )
