"""Who a request is for: the owner of what it creates, whichever door it came in by."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Caller"]


@dataclass(frozen=True)
class Caller:
    """The owner recorded on the sessions and flows a request creates, and the API client (``None``
    for the static development token). The gateway's ``Principal`` is one, with its limits."""

    owner: str
    client_id: str | None
