"""Lockout: after ``lockout_failures`` failed liveness sessions of one subject key or device id
within ``lockout_window_s``, new sessions for it are refused for ``lockout_cooldown_s``.

The liveness worker records a failure (:func:`lockout_subjects` of the session's settings) when a
session ends FAILED; the gateway refuses to create a session while any of its subjects is locked.
Only SHA-256 digests scoped by the owning client are stored (``infra.db.security.subject_digest``).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from infra.db.security import LivenessFailures, subject_digest
from infra.settings import Settings
from services.gateway.problems import ProblemError

__all__ = ["lockout_subjects", "refuse_if_locked"]


def lockout_subjects(owner: str, settings: dict[str, Any]) -> list[str]:
    """The digests a session's failure counts against (its subject key and device id, if any)."""
    subjects = []
    for kind, snake, camel in (("subject", "subject_key", "subjectKey"), ("device", "device_id", "deviceId")):
        value = settings.get(snake, settings.get(camel))
        if isinstance(value, str) and value:
            subjects.append(subject_digest(owner, kind, value))
    return subjects


async def refuse_if_locked(
    failures: LivenessFailures | None,
    settings: Settings,
    owner: str,
    session_settings: dict[str, Any],
    now: datetime | None = None,
) -> None:
    """Raise 429 ``SUBJECT_LOCKED_OUT`` (with ``Retry-After``) while a subject is locked out."""
    subjects = lockout_subjects(owner, session_settings)
    if failures is None or not subjects:
        return
    now = now or datetime.now(UTC)
    until = await failures.locked_until(
        subjects,
        now,
        failures=settings.lockout_failures,
        window_s=settings.lockout_window_s,
        cooldown_s=settings.lockout_cooldown_s,
    )
    if until is None:
        return
    retry_after = max(1, math.ceil((until - now).total_seconds()))
    raise ProblemError(
        429,
        "Subject locked out",
        f"Too many failed liveness sessions for this subject or device; retry in {retry_after} s.",
        code="SUBJECT_LOCKED_OUT",
        headers={"Retry-After": str(retry_after)},
    )
